"""shim.jsonlite against the json module: the same values, the same text, errors where json errs."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shim import jsonlite

ROOT = Path(__file__).resolve().parents[2]

# Every Unicode code point, lone surrogates included (json escapes and reads them).
ANY_CHAR = st.characters(codec=None, exclude_categories=())
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**30), 10**30),
    st.floats(),  # nan and infinities included: json writes and reads NaN/Infinity
    st.text(ANY_CHAR, max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(ANY_CHAR, max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
# Text that is often nearly JSON, so that most syntax errors and their positions get exercised.
NEAR_JSON = st.text(
    alphabet=' \t\n\r{}[]":,-+.0123456789eEtruefalsnNaIiyx\\/u\x00\x1f\u00e9\ud800', max_size=30
)


def _outcome(fn: Any, arg: Any) -> tuple[str, str]:
    """What a call did, comparable across json and jsonlite: ("ok", repr) or ("error", message)."""
    try:
        return "ok", repr(fn(arg))
    except RecursionError:
        return "error", "nested too deeply"
    except ValueError as exc:
        return "error", str(exc)


def _agree(data: str | bytes) -> None:
    theirs = _outcome(json.loads, data)
    ours = _outcome(jsonlite.loads, data)
    if theirs[1] == "nested too deeply":  # json lets RecursionError out; jsonlite says ValueError
        assert ours[0] == "error" and "nested too deeply" in ours[1]
    else:
        assert ours == theirs


@settings(max_examples=500)
@given(value=values)
def test_dumps_writes_what_json_writes(value: object) -> None:
    assert jsonlite.dumps(value) == json.dumps(value)


@settings(max_examples=500)
@given(value=values, indent=st.sampled_from([None, 0, 2, "\t"]), pad=st.sampled_from(["", " ", "\n\t\r "]))
def test_loads_reads_what_json_reads(value: object, indent: Any, pad: str) -> None:
    text = pad + json.dumps(value, indent=indent, ensure_ascii=indent is None) + pad
    _agree(text)
    _agree(text.encode("utf-8", "surrogatepass"))
    assert repr(jsonlite.loads(text)) == repr(value)


@settings(max_examples=1000)
@given(data=st.binary(max_size=40))
def test_random_bytes_as_json_reads_them(data: bytes) -> None:
    _agree(data)


@settings(max_examples=1500)
@given(text=NEAR_JSON)
def test_near_json_text_as_json_reads_it(text: str) -> None:
    _agree(text)
    _agree(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=300)
@given(value=values, data=st.data())
def test_damaged_documents_fail_where_json_fails(value: object, data: st.DataObject) -> None:
    text = json.dumps(value)
    cut = data.draw(st.integers(0, len(text)))
    insert = data.draw(st.sampled_from(["", ",", "]", "}", '"', "x", " ", "\\"]))
    _agree(text[:cut] + insert + text[cut + 1 :])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"{",
        b'{"a" 1}',
        b'{"a": 1,}',
        b"[1 2]",
        b'"\\x"',
        b'"\\ud800"',
        b'"\\u12"',
        b'"a\nb"',
        b"\xff",
        b"\xed\xa0\x80",  # a UTF-8 encoded surrogate: json reads it (surrogatepass)
        b"\xef\xbb\xbf{}",  # UTF-8 BOM in bytes: json reads it
        "\ufeff{}",  # UTF-8 BOM in str: json refuses
        '{"a": 1} x',
        "NaN",
        "-Infinity",
        "1" * 5000,  # more digits than int() takes
        "1e999",
        '{"a": 1, "a": 2}',
        "[" * 100_000,
        '{"a":' * 100_000,
        '"x"'.encode("utf-16"),
        '{"k": [1]}'.encode("utf-32-le"),
        bytearray(b"[true]"),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_edge_cases_as_json_reads_them(data: str | bytes) -> None:
    _agree(data)


def test_errors_are_value_errors_with_a_position() -> None:
    with pytest.raises(jsonlite.JSONDecodeError) as info:
        jsonlite.loads('{"cniVersion": "1.0.0",\n "name" "x"}')
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.msg, err.pos, err.lineno, err.colno) == ("Expecting ':' delimiter", 32, 2, 9)
    with pytest.raises(ValueError, match="position 1"):
        jsonlite.loads(b"{\xff}")
    with pytest.raises(ValueError, match="nested too deeply"):
        jsonlite.loads("[" * 100_000)
    with pytest.raises(TypeError):
        jsonlite.loads(1)  # type: ignore[arg-type]


def test_dumps_errors_as_json_does() -> None:
    circular: list[object] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular reference"):
        jsonlite.dumps(circular)
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        jsonlite.dumps({"a": {1}})
    # a failed call leaves nothing behind: the next one with the same objects works
    value = {"a": [1]}
    with pytest.raises(TypeError):
        jsonlite.dumps([value, object()])
    assert jsonlite.dumps([value, value]) == json.dumps([value, value])
    assert jsonlite.dumps({1: 2, None: 3, 1.5: True}) == json.dumps({1: 2, None: 3, 1.5: True})


PROBE = """
import sys
sys.path.insert(0, {root!r})
before = set(sys.modules)
from shim import jsonlite
results = []
documents = (b'{{"a": [1, 2.5, null, "\\\\u00e9"]}}', b'{{"a" 1}}', b'[1,', b'"\\\\x"', b'\\xff')
for data in (*documents, b'[' * 50000, b'1 2'):
    try:
        results.append(("ok", repr(jsonlite.loads(data))))
    except ValueError as exc:
        results.append((type(exc).__name__, str(exc)))
results.append(("dumps", jsonlite.dumps({{"k": ["\\u00e9", 1.5, None]}})))
print(repr((sorted(set(sys.modules) - before), "json.decoder" in sys.modules, results)))
"""


def test_without_json_loaded_errors_still_come_out_right_and_json_is_never_imported() -> None:
    """In the shim process json is never imported: the C scanner must still raise our error."""
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", PROBE.format(root=str(ROOT))],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    ).stdout
    imported, stand_in_left, results = ast.literal_eval(out)
    assert sorted(imported) == ["__future__", "_json", "shim", "shim.jsonlite"]
    assert not stand_in_left
    assert results == [
        ("ok", repr({"a": [1, 2.5, None, "é"]})),
        ("JSONDecodeError", "Expecting ':' delimiter: line 1 column 6 (char 5)"),
        ("JSONDecodeError", "Expecting value: line 1 column 4 (char 3)"),
        ("JSONDecodeError", "Invalid \\escape: line 1 column 2 (char 1)"),
        ("UnicodeDecodeError", "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
        ("JSONDecodeError", "Document nested too deeply: line 1 column 1 (char 0)"),
        ("JSONDecodeError", "Extra data: line 1 column 3 (char 2)"),
        ("dumps", '{"k": ["\\u00e9", 1.5, null]}'),
    ]
