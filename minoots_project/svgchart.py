"""The dashboard's per-minute chart of the last hour, drawn on the server as inline SVG.

No chart library and nothing fetched from elsewhere: bars are the fires of each minute (left
scale), lines its lateness p50 / p95 / p99 (right scale); every bar carries a native SVG
``<title>`` tooltip. Only numbers and fixed strings reach the markup.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from timers.dashboard import MinuteLateness
from timers.timefmt import ms_text

WIDTH, HEIGHT = 760, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 64, 14, 30
LINES = (("p50", "#2e7d32"), ("p95", "#ef6c00"), ("p99", "#c62828"))


def _nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return float(step * magnitude)
    return float(10 * magnitude)


def lateness_chart(minutes: list[MinuteLateness], *, end: datetime, span: int = 60) -> SafeString:
    """An SVG of the ``span`` minutes up to ``end`` (UTC, truncated to the minute)."""
    end_minute = end.replace(second=0, microsecond=0)
    first = end_minute - timedelta(minutes=span - 1)
    by_minute = {m.minute: m.lateness for m in minutes}
    slots = [first + timedelta(minutes=i) for i in range(span)]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot_w = plot_w / span
    fires_max = _nice_max(max((lat.fires for lat in by_minute.values()), default=0))
    late_max = _nice_max(max((lat.p99 or 0 for lat in by_minute.values()), default=0))

    def y_of(value: float, top: float) -> float:
        return TOP + plot_h - (value / top) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="minoots-chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" role="img" aria-label="Fires and lateness per minute, last {span} minutes">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ddd"/>',
    ]
    for fraction in (0.5, 1.0):  # grid lines and both scales
        y = y_of(fraction, 1.0)
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{fires_max * fraction:g}</text>'
        )
        parts.append(
            f'<text x="{LEFT + plot_w + 6}" y="{y + 4:.1f}" class="axis">{escape(ms_text(late_max * fraction))}</text>'
        )
    parts.append(f'<text x="{LEFT - 6}" y="{TOP + plot_h + 4}" text-anchor="end" class="axis">0</text>')
    for i, slot in enumerate(slots):
        x = LEFT + i * slot_w
        lat = by_minute.get(slot)
        if lat is not None and lat.fires:
            y = y_of(lat.fires, fires_max)
            tip = (
                f"{slot:%H:%M}Z: {lat.fires} fired; lateness p50 {ms_text(lat.p50)}, "
                f"p95 {ms_text(lat.p95)}, p99 {ms_text(lat.p99)}, max {ms_text(lat.max)}"
            )
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(1.0, slot_w - 2):.1f}" '
                f'height="{TOP + plot_h - y:.1f}" fill="#90caf9"><title>{escape(tip)}</title></rect>'
            )
        if i % 10 == 0 or i == span - 1:
            parts.append(
                f'<text x="{x + slot_w / 2:.1f}" y="{HEIGHT - 10}" text-anchor="middle" class="axis">'
                f"{slot:%H:%M}</text>"
            )
    for name, colour in LINES:
        segments: list[list[str]] = [[]]
        for i, slot in enumerate(slots):
            lat = by_minute.get(slot)
            value = getattr(lat, name) if lat is not None else None
            if value is None:
                if segments[-1]:
                    segments.append([])  # a minute without fires breaks the line
                continue
            segments[-1].append(f"{LEFT + (i + 0.5) * slot_w:.1f},{y_of(value, late_max):.1f}")
        for points in segments:
            if len(points) == 1:
                cx, cy = points[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{colour}"/>')
            elif points:
                parts.append(
                    f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
                )
    legend_x = LEFT + 6
    parts.append(f'<rect x="{legend_x}" y="{TOP + 4}" width="10" height="10" fill="#90caf9"/>')
    parts.append(f'<text x="{legend_x + 14}" y="{TOP + 13}" class="legend">fires</text>')
    for j, (name, colour) in enumerate(LINES):
        lx = legend_x + 60 + j * 110  # "lateness p95" needs ~90 px at the legend size
        parts.append(
            f'<line x1="{lx}" x2="{lx + 14}" y1="{TOP + 9}" y2="{TOP + 9}" stroke="{colour}" stroke-width="2"/>'
        )
        parts.append(f'<text x="{lx + 18}" y="{TOP + 13}" class="legend">lateness {name}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 (numbers and escaped text only, built above)
