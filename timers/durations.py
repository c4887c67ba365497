"""Duration grammar shared by the API and the settings.

Accepted: integer milliseconds (``5000``), compact units (``500ms``, ``30s``, ``5m``, ``2h``,
``1d``, compound ``1h30m``; parsed by pytimeparse2) and ISO-8601 durations (``PT15M``,
``P1DT2H``; parsed by isodate). Calendar units (months, years) are refused: their length
depends on the date, so a timer could not state its ``durationMs``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import isodate
from pytimeparse2 import parse as parse_compact

_ISO_PREFIX = re.compile(r"^[+-]?P", re.IGNORECASE)


class DurationError(ValueError):
    """The text is not a duration this service understands."""


def parse_duration(value: object) -> timedelta:
    """Parse a user-supplied duration. Raise DurationError with a human message."""
    if isinstance(value, bool):
        raise DurationError("must be a duration string like '5m' or an integer of milliseconds")
    if isinstance(value, (int, float)):
        return _from_milliseconds(value)
    if not isinstance(value, str):
        raise DurationError("must be a duration string like '5m' or an integer of milliseconds")
    text = value.strip()
    if not text or len(text) > 64:
        raise DurationError("must be a duration string like '5m', '1h30m' or 'PT15M'")
    if re.fullmatch(r"[+-]?\d+", text):
        return _from_milliseconds(int(text))
    if _ISO_PREFIX.match(text):
        try:
            parsed = isodate.parse_duration(text.upper())
        except (isodate.ISO8601Error, ValueError, OverflowError) as exc:
            raise DurationError(f"'{value}' is not a valid ISO-8601 duration") from exc
        if not isinstance(parsed, timedelta):
            raise DurationError("ISO-8601 durations with months or years are not supported")
        return parsed
    try:
        seconds = parse_compact(text, raise_exception=True)
    except Exception as exc:  # pytimeparse2 raises bare ValueError/TypeError on odd input
        raise DurationError(
            f"'{value}' is not a duration; use e.g. '500ms', '30s', '5m', '2h', '1d', '1h30m' or 'PT15M'"
        ) from exc
    if seconds is None:
        raise DurationError(
            f"'{value}' is not a duration; use e.g. '500ms', '30s', '5m', '2h', '1d', '1h30m' or 'PT15M'"
        )
    if not isinstance(seconds, (int, float, Decimal)):
        raise DurationError("calendar units (months, years) are not supported")
    try:
        return timedelta(seconds=float(seconds))
    except OverflowError as exc:
        raise DurationError("is too large") from exc


def _from_milliseconds(value: float) -> timedelta:
    try:
        return timedelta(milliseconds=value)
    except (OverflowError, ValueError) as exc:
        raise DurationError("must be a finite number of milliseconds in range") from exc


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
