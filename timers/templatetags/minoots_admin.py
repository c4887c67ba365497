"""Template filters of the admin pages: times in UTC to the millisecond (``timers.timefmt``)."""

from __future__ import annotations

from datetime import datetime

from django import template

from timers.timefmt import ms_text, utc_ms

register = template.Library()


@register.filter(name="utc_ms")
def utc_ms_filter(value: datetime | None) -> str:
    return utc_ms(value)


@register.filter(name="ms_text")
def ms_text_filter(value: int | None) -> str:
    return ms_text(value)
