"""The ``/ato`` grammar: the text of a slash command into one command (no database here).

- ``/ato 10m tea is ready``, ``/ato 1h30m check the deploy``, ``/ato in 2 hours stretch``: a
  duration (at least one unit: a bare ``10`` is refused, it would be 10 ms), then free text;
- ``/ato at 14:00Z standup`` (the next 14:00 UTC), ``/ato at 2026-12-24T09:00+01:00 presents``:
  a time with a UTC offset, then free text;
- the original bot's flags, anywhere: ``--duration``/``-d``, ``--fire-at``/``-f`` (also
  ``--fireAt``; each spelling sets fireAt, which the original's yargs aliases could drop),
  ``--name``/``-n``, ``--region``/``-r``, ``--metadata JSON``, ``--labels JSON``,
  ``--action-bundle JSON``, ``--agent-binding JSON``, ``--requested-by``; ``--flag value`` or
  ``--flag=value``, values in quotes when they hold spaces (a JSON object needs none);
- ``list``, ``cancel <id or prefix>``, ``status <id or prefix>``, ``help``.

Free text is the timer's note (``metadata.slack_note``) and, without ``--name``, its name. The
values are checked by the API's own create serializer afterwards (``services``); this module
only says what was asked and refuses what it cannot read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from timers.durations import DurationError, parse_duration

HELP = """*MINOOTS timers* — `/ato` sets a timer that posts here when it fires.
• `/ato 10m tea is ready` · `/ato 1h30m check the deploy` · `/ato in 2 hours stretch`
• `/ato at 14:00Z standup` (next 14:00 UTC) · `/ato at 2026-12-24T09:00+01:00 presents`
• flags: `--duration 15m` (`-d`), `--fire-at 2026-12-24T09:00:00Z` (`-f`), `--name "Deploy follow-up"` (`-n`), \
`--region eu`, `--labels {"env": "prod"}`, `--metadata {"pr": 42}`, `--action-bundle {...}`, `--agent-binding {...}`
• `/ato list` — your pending timers in this channel · `/ato cancel <id>` · `/ato status <id>` (an id prefix \
from the list is enough) · `/ato help`"""

MAX_DURATION_WORDS = 4

# flag spelling -> the create body's field
FLAGS: dict[str, str] = {
    "--duration": "duration",
    "-d": "duration",
    "--fire-at": "fireAt",
    "--fireat": "fireAt",
    "-f": "fireAt",
    "--name": "name",
    "-n": "name",
    "--region": "region",
    "-r": "region",
    "--metadata": "metadata",
    "--labels": "labels",
    "--action-bundle": "actionBundle",
    "--actionbundle": "actionBundle",
    "--agent-binding": "agentBinding",
    "--agentbinding": "agentBinding",
    "--requested-by": "requestedBy",
    "--requestedby": "requestedBy",
    "--requester": "requestedBy",
}
JSON_FIELDS = frozenset({"metadata", "labels", "actionBundle", "agentBinding"})
# How an error names a field: as the user typed it.
FLAG_NAMES = {
    "duration": "--duration",
    "fireAt": "--fire-at",
    "name": "--name",
    "region": "--region",
    "metadata": "--metadata",
    "labels": "--labels",
    "actionBundle": "--action-bundle",
    "agentBinding": "--agent-binding",
    "requestedBy": "--requested-by",
}

_FLAG = re.compile(r"(--?[A-Za-z][A-Za-z0-9-]*)(=)?")
_SMART_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'"})
_TIME_OF_DAY = re.compile(r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?(Z|z|[+-][0-9]{2}:?[0-9]{2})", re.ASCII)
_DATE_TIME = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2})(:[0-9]{2}(?:\.[0-9]+)?)?(Z|z|[+-][0-9]{2}:?[0-9]{2})?",
    re.ASCII,
)


class GrammarError(ValueError):
    """Text the grammar cannot read; the message is shown to the user as is."""


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class ListTimers:
    pass


@dataclass(frozen=True)
class Cancel:
    reference: str


@dataclass(frozen=True)
class Status:
    reference: str


@dataclass(frozen=True)
class Create:
    """A timer to set: ``when`` is the body's ``duration`` or ``fireAt`` (as the API takes it)."""

    when: dict[str, Any]
    note: str = ""
    fields: dict[str, Any] = field(default_factory=dict)  # the flags' values by body field


Command = Help | ListTimers | Cancel | Status | Create


def parse(text: str, *, now: datetime) -> Command:
    """The command ``text`` asks for; GrammarError with a message for the user otherwise."""
    text = text.translate(_SMART_QUOTES).strip()
    if not text:
        return Help()
    first, _, rest = text.partition(" ")
    keyword = first.lower()
    if keyword == "help":
        return Help()
    if keyword == "list":
        if rest.strip():
            raise GrammarError("`/ato list` takes nothing after it")
        return ListTimers()
    if keyword in ("cancel", "status"):
        reference = rest.strip()
        if not reference or " " in reference:
            raise GrammarError(f"`/ato {keyword}` needs one timer id (or its first characters, from `/ato list`)")
        return Cancel(reference) if keyword == "cancel" else Status(reference)
    words, fields = _scan(text)
    when: dict[str, Any] = {}
    if "duration" in fields:
        when["duration"] = fields.pop("duration")
    if "fireAt" in fields:
        when["fireAt"] = _fire_at(str(fields.pop("fireAt")), now=now, flag="--fire-at")
    if len(when) > 1:
        raise GrammarError("give either --duration or --fire-at, not both")
    if not when:
        when, words = _natural_when(words, now=now)
    return Create(when=when, note=" ".join(words).strip(), fields=fields)


def _scan(text: str) -> tuple[list[str], dict[str, Any]]:
    """Words that are not flags, and the flags' values by body field."""
    words: list[str] = []
    fields: dict[str, Any] = {}
    pos, end = 0, len(text)
    while pos < end:
        if text[pos].isspace():
            pos += 1
            continue
        match = _FLAG.match(text, pos)
        stop = match.end() if match else pos
        if match and (stop == end or text[stop].isspace() or match.group(2)):
            spelling = match.group(1)
            name = FLAGS.get(spelling.lower())
            if name is None:
                raise GrammarError(f"unknown flag `{spelling}`; `/ato help` lists them")
            if name in fields:
                raise GrammarError(f"`{FLAG_NAMES[name]}` is given twice")
            pos = stop
            if not match.group(2):
                while pos < end and text[pos].isspace():
                    pos += 1
            value, pos = _value(text, pos, flag=spelling, json_value=name in JSON_FIELDS)
            fields[name] = value
            continue
        word_end = pos
        while word_end < end and not text[word_end].isspace():
            word_end += 1
        words.append(text[pos:word_end])
        pos = word_end
    return words, fields


def _value(text: str, pos: int, *, flag: str, json_value: bool) -> tuple[Any, int]:
    """The value starting at ``pos`` and the position after it."""
    if pos >= len(text):
        raise GrammarError(f"`{flag}` needs a value")
    char = text[pos]
    if json_value and char in "{[":
        try:
            value, after = json.JSONDecoder().raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise GrammarError(f"`{flag}`: not valid JSON ({exc.msg} at character {exc.pos - pos + 1})") from exc
        return _json_object(value, flag), after
    if char in "\"'":
        close = text.find(char, pos + 1)
        if close < 0:
            raise GrammarError(f"`{flag}`: the quote {char} is not closed")
        raw, after = text[pos + 1 : close], close + 1
    else:
        after = pos
        while after < len(text) and not text[after].isspace():
            after += 1
        raw = text[pos:after]
    if json_value:
        try:
            return _json_object(json.loads(raw), flag), after
        except json.JSONDecodeError as exc:
            raise GrammarError(f"`{flag}`: not valid JSON ({exc.msg})") from exc
    if raw.startswith("-") and _FLAG.fullmatch(raw):
        raise GrammarError(f"`{flag}` needs a value")
    return raw, after


def _json_object(value: Any, flag: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise GrammarError(f'`{flag}` must be a JSON object, like {{"key": "value"}}')
    return value


def _natural_when(words: list[str], *, now: datetime) -> tuple[dict[str, Any], list[str]]:
    """``(when, the words after it)`` from the start of the free text."""
    if not words:
        raise GrammarError("when? `/ato 10m tea`, `/ato at 14:00Z standup`, or see `/ato help`")
    start = 1 if words[0].lower() == "in" and len(words) > 1 else 0
    if words[0].lower() == "at" and len(words) > 1:
        return {"fireAt": _fire_at(words[1], now=now, flag="at")}, words[2:]
    # The longest run of words (a few at most) that reads as a duration with a unit.
    for count in range(min(MAX_DURATION_WORDS, len(words) - start), 0, -1):
        candidate = " ".join(words[start : start + count])
        if not candidate[:1].isdigit() and not candidate.startswith("."):
            break
        if not any(ch.isalpha() for ch in candidate) or candidate.upper().startswith("P"):
            continue
        try:
            delta = parse_duration(candidate)
        except DurationError:
            continue
        if delta <= timedelta(0):
            raise GrammarError(f"`{candidate}` is not a positive duration")
        return {"duration": candidate}, words[start + count :]
    if words[start][:1].isdigit():
        raise GrammarError(f"`{words[start]}` is not a duration; give a unit, e.g. `10s`, `10m`, `1h30m`, `2 hours`")
    raise GrammarError(
        "start with when: a duration (`/ato 10m tea`) or a time (`/ato at 14:00Z standup`); `/ato help` has more"
    )


def _offset(text: str) -> str:
    if text in ("Z", "z"):
        return "+00:00"
    return text if ":" in text else f"{text[:3]}:{text[3:]}"


def _fire_at(value: str, *, now: datetime, flag: str) -> str:
    """An RFC 3339 timestamp for a date-time (seconds optional) or a time of day (the next
    one after ``now``); GrammarError without a UTC offset, which Slack does not tell us."""
    text = value.strip()
    match = _DATE_TIME.fullmatch(text)
    if match:
        date, hours_minutes, seconds, offset = match.groups()
        if offset is None:
            raise GrammarError(f"`{flag} {text}`: add a UTC offset, e.g. `{text}Z` or `{text}+01:00`")
        stamp = f"{date}T{hours_minutes}{seconds or ':00'}{_offset(offset)}"
        try:
            datetime.fromisoformat(stamp)
        except ValueError as exc:
            raise GrammarError(f"`{flag} {text}` is not a valid date and time") from exc
        return stamp
    match = _TIME_OF_DAY.fullmatch(text)
    if match:
        hour, minute, second, offset = match.groups()
        try:
            zone = datetime.fromisoformat(f"2000-01-01T00:00:00{_offset(offset)}").tzinfo
            local_now = now.astimezone(zone)
            at = local_now.replace(hour=int(hour), minute=int(minute), second=int(second or 0), microsecond=0)
        except ValueError as exc:
            raise GrammarError(f"`{flag} {text}` is not a valid time of day") from exc
        if at <= local_now:
            at += timedelta(days=1)
        return at.astimezone(UTC).isoformat()
    if _TIME_OF_DAY.fullmatch(text + "Z") or _DATE_TIME.fullmatch(text):
        raise GrammarError(f"`{flag} {text}`: add a UTC offset, e.g. `{text}Z` or `{text}+01:00`")
    raise GrammarError(f"`{flag} {text[:40]}` is not a time; use `14:00Z`, `09:30+02:00` or `2026-12-24T09:00+01:00`")
