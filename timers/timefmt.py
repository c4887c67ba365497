"""How the operator pages show instants and durations: UTC to the millisecond, everywhere.

The admin's own date format shows minutes ("Dec. 1, 2026, 7:40 p.m."), so a fireAt and the
firedAt 40 ms later looked identical; every time on the admin pages goes through ``utc_ms``.
"""

from __future__ import annotations

from datetime import UTC, datetime

EMPTY = "—"


def utc_ms(moment: datetime | None) -> str:
    """``2026-12-01 19:40:12.345Z``; an em dash for None."""
    if moment is None:
        return EMPTY
    at = moment.astimezone(UTC)
    return f"{at:%Y-%m-%d %H:%M:%S}.{at.microsecond // 1000:03d}Z"


def ms_text(ms: int | float | None) -> str:
    """A duration in milliseconds as people read it: ``740 ms``, ``1.25 s``, ``3 min 20 s``, ``2 h 5 min``."""
    if ms is None:
        return EMPTY
    sign, ms = ("-" if ms < 0 else ""), abs(ms)
    if ms < 1000:
        return f"{sign}{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{sign}{seconds:.2f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{sign}{minutes} min {sec} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{sign}{hours} h {minutes} min"
    return f"{sign}{hours // 24} d {hours % 24} h"
