"""``json.loads`` and ``json.dumps`` on the ``_json`` C accelerator, without importing ``json``.

``import json`` costs ~10 ms per exec (it pulls ``re``); the shim pays it for every pod. This module
drives ``_json.make_scanner`` and ``_json.make_encoder`` exactly as ``json.decoder.JSONDecoder`` and
``json.encoder.JSONEncoder`` do with their default arguments, so results are identical to
``json.loads(data)`` and ``json.dumps(obj)`` (a test compares them on random values and bytes).

Errors: ``loads`` raises ``ValueError`` -- ``JSONDecodeError`` (same message, ``msg``, ``doc``,
``pos``, ``lineno``, ``colno`` as json's) for bad syntax and too-deep nesting, ``UnicodeDecodeError``
for bytes that are not valid in the detected encoding (UTF-8 unless a BOM or NUL pattern says
UTF-16/32, as json does). ``dumps`` raises ``TypeError`` for values JSON cannot carry and
``ValueError`` for circular references, as json does.
"""

from __future__ import annotations

import _json
import sys

__all__ = ["JSONDecodeError", "dumps", "loads"]

_WHITESPACE = " \t\n\r"


class JSONDecodeError(ValueError):
    """A syntax error in a JSON document; the same message and attributes as ``json``'s."""

    def __init__(self, msg: str, doc: str, pos: int) -> None:
        lineno = doc.count("\n", 0, pos) + 1
        colno = pos - doc.rfind("\n", 0, pos)
        ValueError.__init__(self, f"{msg}: line {lineno} column {colno} (char {pos})")
        self.msg = msg
        self.doc = doc
        self.pos = pos
        self.lineno = lineno
        self.colno = colno

    def __reduce__(self) -> tuple[type[JSONDecodeError], tuple[str, str, int]]:
        return self.__class__, (self.msg, self.doc, self.pos)


class _DecoderContext:
    """The attributes ``_json.make_scanner`` reads, set as ``JSONDecoder()`` sets them by default."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    array_hook = None  # read from 3.15 on
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__
    memo: dict[str, str] = {}


_scan_once = _json.make_scanner(_DecoderContext())  # type: ignore[arg-type]  # duck-typed context

# The C scanner raises its syntax errors as ``sys.modules["json.decoder"].JSONDecodeError`` (3.11
# only looks the module up and fails with SystemError when json was never imported; 3.12+ imports
# it). While scanning, a stand-in module carrying our class is put there unless the real one is
# loaded. Nothing else runs during the scan (the hooks are C builtins), so no import can see it.
_decoder_stand_in = type(sys)("json.decoder")
_decoder_stand_in.JSONDecodeError = JSONDecodeError  # type: ignore[attr-defined]


def _detect_encoding(b: bytes | bytearray) -> str:
    """The encoding ``json.detect_encoding`` picks (RFC 4627 NUL patterns and BOMs)."""
    if b.startswith((b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00")):
        return "utf-32"
    if b.startswith((b"\xfe\xff", b"\xff\xfe")):
        return "utf-16"
    if b.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if len(b) >= 4:
        if not b[0]:
            return "utf-16-be" if b[1] else "utf-32-be"
        if not b[1]:
            return "utf-16-le" if b[2] or b[3] else "utf-32-le"
    elif len(b) == 2:
        if not b[0]:
            return "utf-16-be"
        if not b[1]:
            return "utf-16-le"
    return "utf-8"


def _skip_whitespace(s: str, i: int) -> int:
    n = len(s)
    while i < n and s[i] in _WHITESPACE:
        i += 1
    return i


def _scan(s: str, idx: int) -> tuple[object, int]:
    modules = sys.modules
    stand_in = "json.decoder" not in modules
    if stand_in:
        modules["json.decoder"] = _decoder_stand_in
    try:
        value, end = _scan_once(s, idx)
    except StopIteration as stop:
        raise JSONDecodeError("Expecting value", s, stop.value) from None
    except JSONDecodeError:
        raise
    except ValueError as exc:
        pos = getattr(exc, "pos", None)
        if isinstance(pos, int):  # the real json.decoder.JSONDecodeError: json is loaded in this process
            raise JSONDecodeError(getattr(exc, "msg", str(exc)), s, pos) from None
        raise  # e.g. an integer longer than sys.get_int_max_str_digits(), exactly as json raises it
    except RecursionError:
        raise JSONDecodeError("Document nested too deeply", s, idx) from None
    finally:
        if stand_in and modules.get("json.decoder") is _decoder_stand_in:
            del modules["json.decoder"]
    return value, end


def loads(data: bytes | bytearray | str) -> object:
    """Parse one JSON document, as ``json.loads(data)`` does."""
    if isinstance(data, str):
        if data.startswith("\ufeff"):
            raise JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", data, 0)
        s = data
    elif isinstance(data, (bytes, bytearray)):
        s = data.decode(_detect_encoding(data), "surrogatepass")
    else:
        raise TypeError(f"the JSON object must be str, bytes or bytearray, not {data.__class__.__name__}")
    value, end = _scan(s, _skip_whitespace(s, 0))
    end = _skip_whitespace(s, end)
    if end != len(s):
        raise JSONDecodeError("Extra data", s, end)
    return value


def _not_serializable(o: object) -> object:
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def dumps(obj: object) -> str:
    """Serialize ``obj`` as ``json.dumps(obj)`` does (ASCII-only output, ", " and ": " separators)."""
    if isinstance(obj, str):
        return str(_json.encode_basestring_ascii(obj))
    # markers (a fresh dict per call, as JSONEncoder.iterencode) detects circular references
    encode = _json.make_encoder(
        {}, _not_serializable, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )
    return "".join(encode(obj, 0))
