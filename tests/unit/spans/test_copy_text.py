"""The COPY text the loader sends, against a reference that escapes every value one by one.

``encode_rows`` takes shortcuts (whole rows checked at once, JSON kept as
msgspec's bytes, the source and each resource encoded once); the reference
here takes none. Both must give the same bytes and count the same changes, on
the real-world exports and on values that need escaping. The fuzz test
compares them on generated exports too.
"""

from __future__ import annotations

import gzip
from collections import Counter
from typing import Any

import msgspec
import pytest

from spancost.spans.loader import NUL_REPLACED, _copy_text, encode_rows, storable_json
from spancost.spans.normalize import NormalizeSettings, normalize_object
from tests.conftest import SHARED_REALWORLD, realworld

pytestmark = pytest.mark.unit

SETTINGS = NormalizeSettings(user_id_salt="salt")


def reference_copy_text(
    bucket: str, key: str, rows: list[dict[str, Any]]
) -> tuple[bytes, Counter[str]]:
    """What encode_rows must give: every value escaped one by one, as UTF-8, and the
    NULs replaced (a resource's counted once, as its attributes are encoded once)."""
    changes: Counter[str] = Counter()
    resources: dict[int, str] = {}
    lines = []
    for row in rows:
        values = [bucket, key, *row.values()]
        fields = [
            "\\N" if value is None else _copy_text(str(value), changes) for value in values[:-4]
        ]
        for value in values[-4:-1]:
            fields.append(
                "\\N" if value is None else storable_json(value, changes).replace("\\", "\\\\")
            )
        resource = values[-1]
        if id(resource) not in resources:
            resources[id(resource)] = storable_json(resource, changes).replace("\\", "\\\\")
        fields.append(resources[id(resource)])
        lines.append("\t".join(fields) + "\n")
    return "".join(lines).encode(), changes


def _exports() -> list[str]:
    folder = SHARED_REALWORLD / "otlp-traces"
    if not folder.exists():
        return ["absent"]
    return sorted(path.name for path in folder.iterdir() if path.suffix in (".json", ".jsonl"))


@pytest.mark.parametrize("name", _exports())
def test_real_world_exports_encode_as_the_reference(name: str) -> None:
    data = realworld("otlp-traces", name).read_bytes()
    normalized = normalize_object(name, data, SETTINGS)
    assert normalized.rows or normalized.rejections
    changes: Counter[str] = Counter()
    assert (encode_rows("bucket", name, normalized.rows, changes), changes) == (
        reference_copy_text("bucket", name, normalized.rows)
    )


def _span(name: str, **attributes: str) -> dict[str, Any]:
    return {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "name": name,
        "kind": 3,
        "startTimeUnixNano": "1767225600000000000",
        "endTimeUnixNano": "1767225601000000000",
        "attributes": [
            {"key": key, "value": {"stringValue": value}} for key, value in attributes.items()
        ],
    }


def _rows(*spans: dict[str, Any], resource: dict[str, str] | None = None) -> list[dict[str, Any]]:
    request = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": key, "value": {"stringValue": value}}
                        for key, value in (resource or {"service.name": "svc"}).items()
                    ]
                },
                "scopeSpans": [{"scope": {"name": "s"}, "spans": list(spans)}],
            }
        ]
    }
    normalized = normalize_object(
        "k.json.gz", gzip.compress(msgspec.json.encode(request)), SETTINGS
    )
    assert not normalized.rejections
    return normalized.rows


@pytest.mark.parametrize(
    "span",
    [
        _span("plain", **{"pipeline.id": "p"}),
        _span("tab\there", **{"pipeline.id": "new\nline"}),
        _span("back\\slash", **{"team": "cr\rlf", "x": "a\\b"}),
        _span("\0", **{"pipeline.id": "\0", "team": "a\0b", "x": "\0"}),
        _span("None", **{"pipeline.id": "None", "team": "\\N"}),
        _span("ünïcødé ✓", **{"feature": "日本語", "x": "\U0001f600"}),
    ],
    ids=["plain", "tab-newline", "backslash-cr", "nul", "none-text", "unicode"],
)
def test_values_that_need_escaping_encode_as_the_reference(span: dict[str, Any]) -> None:
    rows = _rows(span, _span("second"), resource={"service.name": "s\0vc", "r": "t\tab"})
    for bucket, key in (("bucket", "key"), ("b\\u", "k\tey"), ("b", "k\0ey")):
        changes: Counter[str] = Counter()
        assert (encode_rows(bucket, key, rows, changes), changes) == (
            reference_copy_text(bucket, key, rows)
        )


def test_a_value_that_is_only_nul_is_replaced_not_made_null() -> None:
    """A NUL stands in for SQL null inside the encoder: a value of one NUL must still
    come out as U+FFFD (counted), never as null (the name column would refuse it)."""
    (row,) = _rows(_span("\0", **{"pipeline.id": "\0"}))
    changes: Counter[str] = Counter()
    fields = encode_rows("b", "k", [row], changes).decode().rstrip("\n").split("\t")
    columns = ["source_bucket", "source_key", *row]
    assert fields[columns.index("name")] == "\ufffd"
    assert fields[columns.index("pipeline_id")] == "\ufffd"
    assert changes[NUL_REPLACED] == 3  # name, pipeline_id, and the attribute in its JSON


def test_no_rows_encode_as_nothing() -> None:
    assert encode_rows("b", "k", []) == b""
