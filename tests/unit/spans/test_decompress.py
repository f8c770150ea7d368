"""gzip through ISA-L (the optional ``isal`` package) against zlib alone.

The loader inflates whole objects with ISA-L when it is installed and leaves
anything unusual to zlib. Either way an object must give the same bytes, or
be refused with the same reason: these feed the manifest's quarantine rows.
"""

from __future__ import annotations

import gzip
import random

import pytest

from spancost.errors import BadExport
from spancost.spans import otlp

pytestmark = pytest.mark.unit

BODY = b'{"resourceSpans":[{"resource":{"attributes":[]},"scopeSpans":[]}]}\n' * 2000
PLAIN = gzip.compress(BODY, mtime=0)


def _variants() -> dict[str, bytes]:
    named = gzip.compress(BODY, mtime=0)[:3] + b"\x08" + PLAIN[4:10] + b"name\0" + PLAIN[10:]
    cases = {
        "plain": PLAIN,
        "two members": PLAIN + PLAIN,
        "zero padding between members": PLAIN + b"\0" * 7 + PLAIN,
        "with a file name": named,
        "header only": PLAIN[:10],
        "truncated trailer": PLAIN[:-3],
        "truncated data": PLAIN[: len(PLAIN) // 2],
        "bad crc": PLAIN[:-8] + bytes([PLAIN[-8] ^ 1]) + PLAIN[-7:],
        "bad size": PLAIN[:-1] + bytes([PLAIN[-1] ^ 1]),
        "trailing garbage": PLAIN + b"xyz",
        "reserved flag": PLAIN[:3] + b"\x20" + PLAIN[4:],
        "bad method": PLAIN[:2] + b"\x07" + PLAIN[3:],
        "magic only": PLAIN[:2],
    }
    rng = random.Random(7)
    for index in range(200):
        flipped = bytearray(PLAIN)
        position = rng.randrange(len(flipped))
        flipped[position] ^= 1 << rng.randrange(8)
        cases[f"bit flip {index} at {position}"] = bytes(flipped)
    return cases


def _outcome(data: bytes, limit: int) -> tuple[str, object]:
    try:
        return "bytes", otlp.decompress(data, where="k.json.gz", limit=limit)
    except BadExport as exc:
        return "refused", (str(exc), exc.error_type, exc.location)


@pytest.mark.parametrize("limit", [1 << 30, len(BODY), len(BODY) - 1, 100])
def test_isal_gives_what_zlib_gives(monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    if otlp._ISAL is None:
        pytest.skip("isal is not installed: zlib alone is the path")
    variants = _variants()
    with_isal = {name: _outcome(data, limit) for name, data in variants.items()}
    monkeypatch.setattr(otlp, "_ISAL", None)
    zlib_only = {name: _outcome(data, limit) for name, data in variants.items()}
    assert with_isal == zlib_only


def test_isal_takes_plain_members_and_leaves_the_rest_to_zlib() -> None:
    if otlp._ISAL is None:
        pytest.skip("isal is not installed: zlib alone is the path")
    assert otlp._isal_inflate(PLAIN + b"\0\0" + PLAIN, 1 << 30) == BODY + BODY
    variants = _variants()
    for name in ("with a file name", "trailing garbage", "reserved flag", "truncated data"):
        assert otlp._isal_inflate(variants[name], 1 << 30) is None, name
    assert otlp._isal_inflate(PLAIN, len(BODY) - 1) is None  # the limit: zlib names it
