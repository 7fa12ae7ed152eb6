"""Strict JSON decoding for the files the daemon reads back: its checkpoint and aws-vpc-cni's.

``json.loads`` keeps the last of two members with the same name and accepts NaN and Infinity; a file
that says two things, or a number that is not one, is refused here instead. Objects decode as
``JsonObject``, which remembers the member names seen more than once so that the caller can name them
in its error. Pure; errors are ``StrictJsonError`` with a message that reads after "<file>: ".

``reject``, ``check_fields`` and ``fields_object`` are the validators' shared messages ("<path>:
missing; expected ...", "<path>: <value> is not ...", unknown and repeated fields), raised as the
caller's error class.
"""

from __future__ import annotations

import json
from typing import NoReturn


class StrictJsonError(Exception):
    """The bytes are not one strict JSON document; the message says why and what was expected."""


class JsonObject(dict[str, object]):
    """A decoded JSON object that remembers member names seen more than once."""

    __slots__ = ("duplicates",)

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        super().__init__()
        self.duplicates: list[str] = []
        for name, value in pairs:
            if name in self:
                self.duplicates.append(name)
            self[name] = value


def _reject_constant(name: str) -> NoReturn:
    raise StrictJsonError(f"{name} is not valid JSON (numbers must be finite)")


def loads(data: bytes, *, expected: str = "a JSON object") -> object:
    """The document in ``data`` (UTF-8), objects as ``JsonObject``; ``StrictJsonError`` naming
    ``expected`` when the bytes are empty, not UTF-8, too deeply nested or not valid JSON."""
    if not data.strip():
        raise StrictJsonError(f"the file is empty; expected {expected}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StrictJsonError(f"not UTF-8 ({exc}); expected {expected}") from None
    try:
        return json.loads(text, object_pairs_hook=JsonObject, parse_constant=_reject_constant)
    except RecursionError:
        raise StrictJsonError(f"nested too deeply; expected {expected}") from None
    except ValueError as exc:  # JSONDecodeError, and integers beyond the int-string limit
        raise StrictJsonError(f"not valid JSON ({exc}); expected {expected}") from None


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()  # a member that is absent: ``doc.get(name, MISSING)``


def reject(error: type[Exception], path: str, value: object, allowed: str) -> NoReturn:
    """Raise ``error`` saying that ``value`` at ``path`` (``MISSING``: absent) is not ``allowed``;
    the value is shown as its repr, cut at 80 characters."""
    if value is MISSING:
        raise error(f"{path}: missing; expected {allowed}")
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    raise error(f"{path}: {shown} is not {allowed}")


def check_fields(error: type[Exception], doc: JsonObject, path: str, fields: tuple[str, ...]) -> None:
    """Raise ``error`` for a member named twice or one not in ``fields``."""
    if doc.duplicates:
        raise error(f"{path}: field {doc.duplicates[0]!r} appears more than once")
    for name in doc:
        if name not in fields:
            raise error(f"{path}: unknown field {name!r}; allowed: {', '.join(fields)}")


def fields_object(error: type[Exception], value: object, path: str, fields: tuple[str, ...]) -> JsonObject:
    """``value`` as an object whose members are all among ``fields``, each once; else ``error``."""
    if not isinstance(value, JsonObject):
        reject(error, path, value, f"an object with fields {', '.join(fields)}")
    check_fields(error, value, path, fields)
    return value
