"""Strict JSON decoding for the files the daemon reads back: its checkpoint and aws-vpc-cni's.

``json.loads`` keeps the last of two members with the same name and accepts NaN and Infinity; a file
that says two things, or a number that is not one, is refused here instead. Objects decode as
``JsonObject``, which remembers the member names seen more than once so that the caller can name them
in its error. Pure; errors are ``StrictJsonError`` with a message that reads after "<file>: ".
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
        raise StrictJsonError(f"not UTF-8 ({exc}); expected a JSON object") from None
    try:
        return json.loads(text, object_pairs_hook=JsonObject, parse_constant=_reject_constant)
    except RecursionError:
        raise StrictJsonError("nested too deeply; expected a JSON object") from None
    except ValueError as exc:  # JSONDecodeError, and integers beyond the int-string limit
        raise StrictJsonError(f"not valid JSON ({exc}); expected a JSON object") from None
