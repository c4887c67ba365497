"""Settings invariants as Django system checks, so a process refuses to start while one fails.

``manage.py check``, ``migrate`` (the first step of ``make run`` and of compose) and
``runserver`` run them like every Django check; the worker and beat run them at start through
``minoots_project.celery``, which imports this module (the package imports the Celery app, so
every process registers these checks).

- ``minoots.E001``: the broker's ``visibility_timeout`` is at least VISIBILITY_MARGIN times
  MINOOTS_ARM_HORIZON + MINOOTS_ACTION_LEASE. Redis hands a message that is not acked within
  it to another worker (kombu #337, celery #2481): an ETA tick waits unacked up to the horizon,
  an action then runs up to its lease, and a message held longer is delivered twice.
- ``minoots.E002``: the longest attempt of every action kind ends before MINOOTS_ACTION_LEASE,
  or the reconciler recovers a run that is still running and another worker runs it again.
- ``minoots.E003``: that attempt also ends before the Celery task time limits, or the limit
  interrupts it (``SoftTimeLimitExceeded``) half-way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, register

TAG = "minoots"

# "Well above": room for a worker that reserved the message before its threads were free.
VISIBILITY_MARGIN = 2
# kombu's default when the Redis transport options name none (kombu/transport/redis.py).
REDIS_DEFAULT_VISIBILITY_TIMEOUT = 3600
# Kinds without a timeout of their own: a file action is one local write of at most 1 MiB.
KINDS_WITHOUT_TIMEOUT = frozenset({"file"})


@dataclass(frozen=True)
class AttemptBound:
    kind: str
    seconds: float
    how: str  # how the bound follows from the constant
    constant: str  # what to lower to shorten it


def attempt_bounds() -> list[AttemptBound]:
    """The longest one attempt of each action kind with a timeout can take."""
    # Imported here, not at module level: this module is imported with the package, before the
    # apps (whose models the runners import) are ready.
    from actions.runners import command, slack, webhook

    return [
        AttemptBound(
            kind="webhook",
            seconds=webhook.longest_attempt_seconds(),
            how=f"a wait of at most {webhook.SLOT_WAIT_SECONDS:g} s for a connection slot, then the largest "
            f"timeoutMs, {webhook.MAX_TIMEOUT_MS} ms (a hard deadline), plus 5 s",
            constant="MAX_TIMEOUT_MS and SLOT_WAIT_SECONDS in actions/runners/webhook.py",
        ),
        AttemptBound(
            kind="command",
            seconds=command.MAX_TIMEOUT_MS / 1000,
            how=f"the largest timeoutMs, {command.MAX_TIMEOUT_MS} ms",
            constant="MAX_TIMEOUT_MS in actions/runners/command.py",
        ),
        AttemptBound(
            kind="agent_prompt",
            seconds=webhook.longest_attempt_seconds(),
            how=f"a webhook attempt: a slot wait of at most {webhook.SLOT_WAIT_SECONDS:g} s, then its largest "
            f"timeoutMs, {webhook.MAX_TIMEOUT_MS} ms, plus 5 s",
            constant="MAX_TIMEOUT_MS in actions/runners/webhook.py",
        ),
        AttemptBound(
            kind="slack",
            seconds=slack.MAX_TIMEOUT_MS / 1000,
            how=f"the largest timeoutMs, {slack.MAX_TIMEOUT_MS} ms (a hard deadline)",
            constant="MAX_TIMEOUT_MS in actions/runners/slack.py",
        ),
    ]


def _seconds(value: timedelta | float | int) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _visibility_timeout() -> float | None:
    """The broker's visibility timeout in seconds; None for a broker that re-delivers nothing."""
    options: dict[str, Any] = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None) or {}
    if "visibility_timeout" in options:
        return float(options["visibility_timeout"])
    url = str(getattr(settings, "CELERY_BROKER_URL", ""))
    if url.startswith(("redis://", "rediss://", "sentinel://")):
        return float(REDIS_DEFAULT_VISIBILITY_TIMEOUT)
    return None  # the embedded filesystem broker hands a message to one consumer, once


@register(TAG)
def check_visibility_timeout(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    visibility = _visibility_timeout()
    if visibility is None:
        return []
    horizon = _seconds(settings.MINOOTS_ARM_HORIZON)
    lease = _seconds(settings.MINOOTS_ACTION_LEASE)
    needed = VISIBILITY_MARGIN * (horizon + lease)
    if visibility >= needed:
        return []
    return [
        Error(
            f"CELERY_VISIBILITY_TIMEOUT ({visibility:g} s) must be at least {VISIBILITY_MARGIN} x "
            f"(MINOOTS_ARM_HORIZON {horizon:g} s + MINOOTS_ACTION_LEASE {lease:g} s) = {needed:g} s: "
            "Redis hands a message that is not acked within it to another worker, so an ETA tick "
            "or an action held longer would be delivered twice.",
            hint=f"Set CELERY_VISIBILITY_TIMEOUT={int(needed) + 1} or more (default 21600), "
            "or lower MINOOTS_ARM_HORIZON / MINOOTS_ACTION_LEASE.",
            id="minoots.E001",
        )
    ]


@register(TAG)
def check_attempts_end_within_the_lease(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    lease = _seconds(settings.MINOOTS_ACTION_LEASE)
    return [
        Error(
            f"A {bound.kind} attempt can last {bound.seconds:g} s ({bound.how}), which is not below "
            f"MINOOTS_ACTION_LEASE ({lease:g} s): the reconciler would recover the run while it still "
            "runs, and another worker would run it again.",
            hint=f"Set MINOOTS_ACTION_LEASE above {bound.seconds:g}s (default 5m), or lower {bound.constant}.",
            id="minoots.E002",
        )
        for bound in attempt_bounds()
        if bound.seconds >= lease
    ]


@register(TAG)
def check_attempts_end_within_the_task_time_limits(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    limits = [
        (name, float(value))
        for name in ("CELERY_TASK_SOFT_TIME_LIMIT", "CELERY_TASK_TIME_LIMIT")
        if (value := getattr(settings, name, None)) is not None
    ]
    return [
        Error(
            f"A {bound.kind} attempt can last {bound.seconds:g} s ({bound.how}), which is not below "
            f"{name} ({limit:g} s in minoots_project/settings.py): Celery would interrupt the attempt "
            "half-way.",
            hint=f"Raise {name} in minoots_project/settings.py, or lower {bound.constant}.",
            id="minoots.E003",
        )
        for bound in attempt_bounds()
        for name, limit in limits
        if bound.seconds >= limit
    ]
