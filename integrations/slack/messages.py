"""What MINOOTS says in Slack: ephemeral answers, the fired message, the message after a button."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from timers.models import Timer

_UNITS = (("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1))


def ephemeral(text: str) -> dict[str, Any]:
    return {"response_type": "ephemeral", "text": text}


def spoken(delta: timedelta) -> str:
    """``10 minutes``, ``1 hour 30 minutes``, ``3 seconds`` (the two largest units)."""
    seconds = max(0, round(delta.total_seconds()))
    if seconds == 0:
        return "a moment"
    parts: list[str] = []
    for name, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {name}{'s' if count != 1 else ''}")
        if len(parts) == 2:
            break
    return " ".join(parts)


def compact(delta: timedelta) -> str:
    """``9m 58s``, ``1h 30m``, ``2d 3h`` (the two largest units)."""
    seconds = max(0, round(delta.total_seconds()))
    parts: list[str] = []
    for name, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{name[0]}")
        if len(parts) == 2:
            break
    return " ".join(parts) or "0s"


def slack_date(at: datetime) -> str:
    """A time Slack shows in each reader's own zone, with the UTC one as the fallback."""
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} {{time_secs}}|{at:%Y-%m-%d %H:%M:%S} UTC>"


def short_id(timer: Timer) -> str:
    return str(timer.pk)[:8]


def label_of(name: str, note: str) -> str:
    return note or name


def fired_text(*, label: str, user_id: str, ago: timedelta, snoozed: bool = False) -> str:
    """The channel post of a fired timer, e.g. "⏰ tea is ready — set by @user 10 minutes ago"."""
    verb = "snoozed" if snoozed else "set"
    return f"⏰ {label} — {verb} by <@{user_id}> {spoken(ago)} ago"


def created(timer: Timer, *, now: datetime) -> str:
    return (
        f"⏰ Timer `{short_id(timer)}` *{timer.name}* set: it fires in {spoken(timer.fire_at - now)} "
        f"({slack_date(timer.fire_at)}) and posts here. `/ato cancel {short_id(timer)}` cancels it."
    )


def listing(timers: list[Timer], *, now: datetime, more: int) -> str:
    if not timers:
        return "You have no pending timers in this channel. `/ato 10m tea` sets one."
    lines = ["Your pending timers in this channel, newest first:"]
    for timer in timers:
        lines.append(
            f"• `{short_id(timer)}` *{timer.name}* — in {compact(timer.fire_at - now)} ({slack_date(timer.fire_at)})"
        )
    if more:
        lines.append(f"…and {more} more.")
    return "\n".join(lines)


def status(timer: Timer, *, now: datetime, runs: list[tuple[str, str, str]]) -> str:
    """``runs``: (action id, kind, status) of its action runs."""
    lines = [f"Timer `{timer.pk}` *{timer.name}*: {timer.status}"]
    if timer.status in ("scheduled", "armed"):
        lines.append(f"fires in {compact(timer.fire_at - now)} ({slack_date(timer.fire_at)})")
    elif timer.fired_at is not None:
        lines.append(f"fired {slack_date(timer.fired_at)}")
    if timer.cancelled_at is not None:
        lines.append(
            f"cancelled {slack_date(timer.cancelled_at)}" + (f": {timer.cancel_reason}" if timer.cancel_reason else "")
        )
    if timer.failure_reason:
        lines.append(timer.failure_reason)
    for action_id, kind, run_status in runs:
        lines.append(f"• action `{action_id}` ({kind}): {run_status}")
    return "\n".join(lines)


def after_button(*, original: str, outcome: str) -> tuple[str, list[dict[str, Any]]]:
    """The fired message once a button was used: its text, and blocks without the buttons."""
    return f"{original}\n{outcome}", [
        {"type": "section", "text": {"type": "mrkdwn", "text": original}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": outcome}]},
    ]
