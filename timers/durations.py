"""Duration grammar shared by the API and the settings.

Accepted:

- milliseconds: a JSON number (``5000``, ``1.5``) or a string of one (``"5000"``), as the
  original MINOOTS clients (and the ``ms`` npm package) send them;
- compact units, optionally compound and space-separated: ``500ms``, ``30s``, ``5m``, ``2h``,
  ``1d``, ``1w``, ``1h30m``, ``1.5h``, ``2 hours 5 minutes``;
- ISO-8601 durations: ``PT15M``, ``P1DT2H``, ``P1W`` (parsed by isodate).

Calendar units (months, years) are refused in both forms: their length depends on the date,
so a timer could not state its ``durationMs``. Numbers are exact decimals (``1.001s`` is
1001 ms, not 1000.9999), truncated to the microsecond.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation

import isodate

MAX_TEXT = 64

_ISO_PREFIX = re.compile(r"[+-]?P", re.IGNORECASE)
_MILLISECONDS = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?", re.ASCII)
_NUMBER = r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
_UNIT = r"[a-z]+"
_COMPACT = re.compile(rf"([+-]?)\s*((?:{_NUMBER}\s*{_UNIT}\s*)+)", re.ASCII | re.IGNORECASE)
_PART = re.compile(rf"({_NUMBER})\s*({_UNIT})", re.ASCII | re.IGNORECASE)

# Unit name -> its length in milliseconds.
_UNITS: dict[str, int] = {}
for _names, _ms in (
    (("ms", "msec", "msecs", "millisecond", "milliseconds"), 1),
    (("s", "sec", "secs", "second", "seconds"), 1000),
    (("m", "min", "mins", "minute", "minutes"), 60_000),
    (("h", "hr", "hrs", "hour", "hours"), 3_600_000),
    (("d", "day", "days"), 86_400_000),
    (("w", "wk", "wks", "week", "weeks"), 604_800_000),
):
    _UNITS.update(dict.fromkeys(_names, _ms))

_CALENDAR_UNITS = {"mo", "mon", "mos", "month", "months", "y", "yr", "yrs", "year", "years"}
_HELP = "use e.g. '500ms', '30s', '5m', '2h', '1d', '1h30m', 'PT15M' or an integer of milliseconds"


class DurationError(ValueError):
    """The text is not a duration this service understands."""


def parse_duration(value: object) -> timedelta:
    """Parse a user-supplied duration (see the module docstring). Raise DurationError with a
    human message; never any other exception. The result may be zero or negative: callers
    decide whether that is allowed."""
    if isinstance(value, bool):
        raise DurationError(f"must be a duration string or a number of milliseconds; {_HELP}")
    if isinstance(value, int):
        return _from_milliseconds(Decimal(value))
    if isinstance(value, float):
        if not math.isfinite(value):  # never from JSON, but from Python callers
            raise DurationError("must be a finite number of milliseconds")
        return _from_milliseconds(Decimal(value))
    if not isinstance(value, str):
        raise DurationError(f"must be a duration string or a number of milliseconds; {_HELP}")
    text = value.strip()
    if not text or len(text) > MAX_TEXT:
        raise DurationError(f"must be a duration string of 1-{MAX_TEXT} characters; {_HELP}")
    if _MILLISECONDS.fullmatch(text):
        return _from_milliseconds(Decimal(text))
    if _ISO_PREFIX.match(text):
        return _parse_iso(text, value)
    return _parse_compact(text, value)


def _parse_iso(text: str, original: str) -> timedelta:
    try:
        parsed = isodate.parse_duration(text.upper())
    except (isodate.ISO8601Error, ValueError, OverflowError, ArithmeticError) as exc:
        raise DurationError(f"'{original}' is not a valid ISO-8601 duration") from exc
    if not isinstance(parsed, timedelta):
        raise DurationError("ISO-8601 durations with months or years are not supported")
    return parsed


def _parse_compact(text: str, original: str) -> timedelta:
    match = _COMPACT.fullmatch(text)
    if match is None:
        raise DurationError(f"'{original}' is not a duration; {_HELP}")
    sign, body = match.groups()
    total = Decimal(0)
    for number, unit in _PART.findall(body):
        unit = unit.lower()
        if unit in _CALENDAR_UNITS:
            raise DurationError("calendar units (months, years) are not supported; use days or weeks")
        if unit not in _UNITS:
            raise DurationError(f"unknown unit '{unit}' in '{original}'; {_HELP}")
        total += Decimal(number) * _UNITS[unit]
    return _from_milliseconds(-total if sign == "-" else total)


def _from_milliseconds(ms: Decimal) -> timedelta:
    try:
        return timedelta(microseconds=int(ms * 1000))
    except (OverflowError, ValueError, InvalidOperation) as exc:
        raise DurationError("is too large") from exc


def parse_duration_setting(name: str, value: str) -> timedelta:
    """Parse a duration-valued setting; a bad value stops start-up with the variable's name."""
    from django.core.exceptions import ImproperlyConfigured

    try:
        parsed = parse_duration(value)
    except DurationError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from exc
    if parsed <= timedelta(0):
        raise ImproperlyConfigured(f"{name} must be positive, got {value!r}")
    return parsed
