"""Fuzzing the decoder, the normaliser and the encoder with hypothesis-generated exports.

Whatever bytes arrive, the only error allowed out is the project's own BadExport
(which quarantines the object); anything else would stop a run. Every row and
rejected span that comes out must also be storable: its COPY text and JSON hold
no NUL and no non-finite number. Runs briefly in `make test` (a few hundred
examples); raise SPANCOST_FUZZ_EXAMPLES to run longer.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections import Counter

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spancost.errors import BadExport
from spancost.spans.loader import encode_rows, storable_json
from spancost.spans.normalize import Normalizer, NormalizeSettings, normalize_object
from spancost.spans.otlp import AnyValue, KeyValue, any_value
from tests.unit.spans.test_copy_text import reference_copy_text

pytestmark = pytest.mark.unit

EXAMPLES = int(os.environ.get("SPANCOST_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NORMALIZE = NormalizeSettings(user_id_salt="fuzz", max_attribute_bytes=4096, max_attributes=64)

texts = st.text(st.characters(codec="utf-8"), max_size=40)  # NUL and odd code points included
hex_ids = st.one_of(
    st.text("0123456789abcdefABCDEF", min_size=0, max_size=34),
    st.sampled_from(["0" * 32, "0" * 16, "AAAAAAAAAAAAAAAAAAAAAA==", "", "zz"]),
)
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "12", "-3", "1e400", "x"]),
)
scalars = st.one_of(
    st.builds(lambda v: {"stringValue": v}, texts),
    st.builds(lambda v: {"boolValue": v}, st.booleans()),
    st.builds(lambda v: {"intValue": v}, numbers),
    st.builds(lambda v: {"doubleValue": v}, numbers),
    st.builds(lambda v: {"bytesValue": v}, texts),
    st.just({}),
)
any_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.builds(lambda vs: {"arrayValue": {"values": vs}}, st.lists(inner, max_size=3)),
        st.builds(
            lambda kvs: {"kvlistValue": {"values": [{"key": k, "value": v} for k, v in kvs]}},
            st.lists(st.tuples(texts, inner), max_size=3),
        ),
    ),
    max_leaves=60,
)
keys = st.one_of(
    texts,
    st.sampled_from(
        [
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.cost",
            "gen_ai.request.model",
            "pipeline.id",
            "user.id",
            "gen_ai.input.messages",
        ]
    ),
)
attributes = st.lists(st.builds(lambda k, v: {"key": k, "value": v}, keys, any_values), max_size=8)
times = st.one_of(
    st.integers(0, 2**64), st.sampled_from(["1767225600000000000", "", "0", "soon", None])
)
spans = st.fixed_dictionaries(
    {
        "traceId": hex_ids,
        "spanId": hex_ids,
        "parentSpanId": hex_ids,
        "name": texts,
        "kind": st.one_of(st.integers(-2, 9), st.sampled_from(["SPAN_KIND_CLIENT", "BOGUS"])),
        "startTimeUnixNano": times,
        "endTimeUnixNano": times,
        "attributes": attributes,
        "events": st.lists(
            st.fixed_dictionaries({"name": texts, "attributes": attributes}), max_size=2
        ),
        "links": st.lists(
            st.fixed_dictionaries(
                {"traceId": hex_ids, "spanId": hex_ids, "attributes": attributes}
            ),
            max_size=2,
        ),
        "status": st.fixed_dictionaries(
            {"code": st.one_of(st.integers(-1, 5), st.just("STATUS_CODE_ERROR")), "message": texts}
        ),
    }
)
requests = st.builds(
    lambda resource, spans: {
        "resourceSpans": [
            {
                "resource": {"attributes": resource},
                "scopeSpans": [{"scope": {"name": "fuzz"}, "spans": spans}],
            }
        ]
    },
    attributes,
    st.lists(spans, max_size=5),
)


def load(key: str, data: bytes) -> None:
    """What the loader does to one object, minus the database."""
    try:
        normalized = normalize_object(key, data, NORMALIZE, limit=1 << 24)
    except BadExport:
        return
    changes: Counter[str] = Counter()
    copy_text = encode_rows("b\\u", key, normalized.rows, changes)
    assert b"\0" not in copy_text
    assert (copy_text, changes) == reference_copy_text("b\\u", key, normalized.rows)
    for rejection in normalized.rejections:
        stored = storable_json(rejection.span)
        assert "\\u0000" not in stored.replace("\\\\", "")
        json.loads(stored, parse_constant=lambda name: pytest.fail(f"{name} in a rejected row"))


@FUZZ
@given(requests)
def test_generated_exports_load_or_raise_bad_export(request: dict) -> None:
    body = json.dumps(request).encode()
    load("fuzz/traces.json", body)
    load("fuzz/traces.json.gz", gzip.compress(body, mtime=0))


@FUZZ
@given(requests, st.data())
def test_mutated_bytes_load_or_raise_bad_export(request: dict, data: st.DataObject) -> None:
    body = bytearray(json.dumps(request).encode())
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(0, max(len(body) - 1, 0)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        junk = data.draw(st.sampled_from([b"\xff", b"\x00", b"\xc3", b"{", b"[", b'"', b"\\"]))
        if action == "flip" and body:
            body[position] = data.draw(st.integers(0, 255))
        elif action == "insert":
            body[position:position] = junk
        elif action == "delete":
            del body[position : position + 3]
        else:
            del body[position:]
    load("fuzz/traces.json", bytes(body))
    load("fuzz/traces.json.gz", gzip.compress(bytes(body), mtime=0)[: len(body)])


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from(["x.json", "x.json.gz", "x.binpb", "x.yaml"]))
def test_arbitrary_bytes_under_any_name_load_or_raise_bad_export(data: bytes, key: str) -> None:
    load(key, data)
    load(key, zlib.compress(data, wbits=31) if key.endswith(".gz") else data)


@settings(max_examples=20, deadline=None)
@given(st.integers(200, 3000), st.sampled_from(["arrayValue", "kvlistValue"]))
def test_any_depth_loads_or_raises_bad_export(depth: int, kind: str) -> None:
    if kind == "arrayValue":
        value = '{"arrayValue":{"values":[' * depth + "{}" + "]}}" * depth
    else:
        value = '{"kvlistValue":{"values":[{"key":"k","value":' * depth + "{}" + "}]}}" * depth
    span = (
        '{"traceId":"' + "1" * 32 + '","spanId":"' + "2" * 16 + '",'
        '"startTimeUnixNano":"1767225600000000000","endTimeUnixNano":"1767225600000000001",'
        '"attributes":[{"key":"deep","value":' + value + "}]}"
    )
    load(
        "fuzz/deep.json", ('{"resourceSpans":[{"scopeSpans":[{"spans":[' + span + "]}]}]}").encode()
    )


@FUZZ
@given(any_values)
def test_attribute_values_convert_as_any_value_says(value: dict) -> None:
    """The normaliser's inline conversions (ints, doubles) give what any_value gives."""
    try:
        any_value_struct = msgspec.convert(value, AnyValue)
    except msgspec.ValidationError:
        return  # the decoder refuses the document (the object is quarantined)
    expected_changes: Counter[str] = Counter()
    try:
        expected = any_value(any_value_struct, NORMALIZE.max_attribute_depth, expected_changes)
        refused = False
    except (ValueError, TypeError):
        expected, refused = None, True  # the span is rejected for it, naming the attribute
    normalizer = Normalizer(NORMALIZE)
    attributes, problem = normalizer._attributes([KeyValue("k", any_value_struct)], None)
    if refused:
        assert problem is not None and problem[0] == "k"
    elif problem is None:
        assert attributes == {"k": expected}
        assert normalizer.changes == expected_changes
    else:  # only the size limit can refuse a value any_value converts
        assert "over" in problem[1]
