"""JSON parsing that answers every malformed or unstorable document with a 400, never a 500."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser

# Deeper than this, a member is reported by name when the parser runs out of stack (the
# serializers refuse more than 32 levels with their own message; this is only for naming).
_NAMING_DEPTH = 32
# Strings and the structural characters of a JSON text: enough to follow nesting and keys.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:]', re.DOTALL)


class _NonFinite:
    """A number JSON cannot carry: ``1e309`` (Python's float makes it inf, which Postgres
    refuses as ``invalid input syntax for type json``), or the NaN / Infinity literals."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _path(parts: list[str | int]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _first_non_finite(document: Any) -> tuple[list[str | int], _NonFinite] | None:
    """The path and value of the first non-finite number in document order (iterative)."""
    stack: list[tuple[Any, list[str | int]]] = [(document, [])]
    while stack:
        item, path = stack.pop()
        if isinstance(item, _NonFinite):
            return path, item
        if isinstance(item, dict):
            stack.extend((value, [*path, key]) for key, value in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((value, [*path, i]) for i, value in reversed(list(enumerate(item))))
    return None


def _too_deep_member(text: str) -> str | None:
    """The top-level member of a JSON object text whose value nests deeper than _NAMING_DEPTH."""
    depth = 0
    key: str | None = None
    last_string: str | None = None
    for match in _TOKEN.finditer(text):
        lexeme = match.group()
        if lexeme in ("{", "["):
            depth += 1
            if depth > _NAMING_DEPTH + 1:
                return key
        elif lexeme in ("}", "]"):
            depth -= 1
        elif lexeme == ":":
            if depth == 1 and last_string is not None:
                try:
                    key = json.loads(last_string)
                except ValueError:
                    return None
        else:
            last_string = lexeme
    return None


class SafeJSONParser(JSONParser):
    """DRF's JSONParser turns ValueError into a 400 but lets RecursionError through (a 500):
    ``[[[[…]]]]`` nested a few thousand levels deep is enough. And Python's json turns
    ``1e309`` into inf, which no database column takes: refused here, naming the field, like
    the NaN and Infinity literals (which are not JSON)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
        found_non_finite = False

        def non_finite(literal: str) -> _NonFinite:
            nonlocal found_non_finite
            found_non_finite = True
            return _NonFinite(literal)

        def parse_float(literal: str) -> float | _NonFinite:
            value = float(literal)
            return value if math.isfinite(value) else non_finite(literal)

        try:
            document = json.loads(text, parse_float=parse_float, parse_constant=non_finite)
        except RecursionError as exc:
            member = _too_deep_member(text)
            if member is not None:
                raise ValidationError(
                    {member: ["is nested too deeply (JSON nesting exceeds the parser's limit)"]}
                ) from exc
            raise ParseError("JSON parse error - the document is nested too deeply") from exc
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
        if found_non_finite:
            self._refuse_non_finite(document)
        return document

    @staticmethod
    def _refuse_non_finite(document: Any) -> None:
        found = _first_non_finite(document)
        assert found is not None  # a hook created one
        path, value = found
        problem = (
            f"{value.literal[:40]} is not a finite number"
            f"{f' (at {_path(path)})' if len(path) > 1 else ''}; JSON numbers must be finite, "
            "within ±1.7976931348623157e308"
        )
        if isinstance(document, dict) and path:
            raise ValidationError({str(path[0]): [problem]})
        raise ParseError(f"JSON parse error - {problem}")
