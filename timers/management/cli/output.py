"""What the verbs print: aligned tables for people, JSON for scripts, times in UTC to the ms."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import IO, Any, Protocol, TypeVar

from django.core.management.base import CommandError, OutputWrapper
from tqdm import tqdm

from timers.api.errors import _first_message

T = TypeVar("T")


class Verb(Protocol):
    """What a verb needs of the command: its two streams."""

    stdout: OutputWrapper
    stderr: OutputWrapper


def utc(value: datetime | None) -> str:
    """``2026-12-01T19:40:00.123Z``, or ``-`` for no time."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Columns padded to their widest cell; ``-`` for None."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells]
    return "\n".join(lines)


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """``label: value`` lines, the labels aligned."""
    width = max(len(label) for label, _ in pairs)
    return "\n".join(f"{label.ljust(width)}  {'-' if value is None else value}" for label, value in pairs)


def write_json(verb: Verb, data: Any) -> None:
    verb.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str))


# The API's field names as the options that give them, so an error names what the operator typed.
OPTIONS = {
    "duration": "--duration",
    "fireAt": "--fire-at",
    "fireAfter": "--fire-after",
    "fireBefore": "--fire-before",
    "status": "--status",
    "name": "--name",
    "labels": "--label",
    "metadata": "--metadata",
    "agentBinding": "--agent-binding",
    "requestedBy": "--requested-by",
}


def option_message(message: str) -> str:
    """``message`` (``field: reason``, the API's words) with the field named as its option."""
    field, sep, reason = message.partition(":")
    return f"{OPTIONS[field]}:{reason}" if sep and field in OPTIONS else message


def validation_error(detail: Any) -> CommandError:
    """A serializer's errors as the API words them (``--option: reason``), on one line."""
    return CommandError(option_message(_first_message(detail)))


def progress(items: Iterable[T], *, total: int | None, desc: str, unit: str, show: bool | None) -> Iterator[T]:
    """``items`` with a tqdm bar on stderr; ``show`` None draws it only on a terminal."""
    stream: IO[str] = sys.stderr
    bar = tqdm(items, total=total, desc=desc, unit=unit, file=stream, disable=None if show is None else not show)
    try:
        yield from bar
    finally:
        bar.close()


def progress_bar(*, total: int | None, desc: str, unit: str, show: bool | None) -> tqdm[Any]:
    """A tqdm bar on stderr to ``update()`` by hand; ``show`` None draws it only on a terminal."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None if show is None else not show)
