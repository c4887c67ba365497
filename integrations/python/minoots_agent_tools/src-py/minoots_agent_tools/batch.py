"""What ``MinootsClient.schedule_timers`` takes and answers: no I/O here.

``POST /api/timers/batch`` creates up to 1,000 timers per request and answers each on its own
(``{"results": [{index, status, timer | error}, ...]}``); ``schedule_timers`` cuts any number of
timers into such chunks and gives back one ``BatchResult`` per timer, in input order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict

from minoots_agent_tools.errors import MinootsError, error_for

# The server's default MINOOTS_BATCH_MAX: a larger chunk is refused whole (400).
BATCH_MAX = 1000


class TimerRequest(TypedDict, total=False):
    """One timer of ``schedule_timers``: the keyword arguments of ``schedule_timer``."""

    name: str | None
    requested_by: str | None
    duration: str | int | timedelta | None
    fire_at: str | datetime | None
    metadata: Mapping[str, Any] | None
    labels: Mapping[str, str] | None
    action_bundle: Mapping[str, Any] | None
    agent_binding: Mapping[str, Any] | None
    region: str | None
    ecosystem: Mapping[str, Any] | None
    idempotency_key: str | None


TIMER_REQUEST_FIELDS = frozenset(TimerRequest.__annotations__)


@dataclass(frozen=True)
class BatchResult:
    """What became of the timer at ``index`` of the input.

    ``status`` is what a single create would have answered: 201 (created) or 200 (its
    ``idempotency_key`` was already used with the same body: the stored timer), both with
    ``timer``; or 400 (invalid), 403 (another tenant or subject named), 409 (the key was used
    with another body), 429 (over the tenant's quota), with ``error``: the typed error a single
    create would have raised (``ValidationError``, ``AuthError``, ``ConflictError``,
    ``RateLimited``), carrying ``status``, ``message`` and ``details``; returned, not raised.
    """

    index: int
    status: int
    timer: dict[str, Any] | None = None
    error: MinootsError | None = None

    @property
    def ok(self) -> bool:
        """The timer exists: created now (201) or earlier with this key (200)."""
        return self.timer is not None

    @property
    def created(self) -> bool:
        return self.status == 201


def batch_results(answer: Any, *, offset: int, count: int) -> list[BatchResult]:
    """The results of one chunk's answer, indexed from ``offset`` (the chunk's first timer)."""
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list) or len(results) != count:
        got = len(results) if isinstance(results, list) else "no"
        raise MinootsError(f"the batch answer has {got} results for {count} timers", body=answer)
    placed: list[BatchResult | None] = [None] * count
    for position, item in enumerate(results):
        item = item if isinstance(item, dict) else {}
        index = item.get("index", position)
        if not isinstance(index, int) or not 0 <= index < count or placed[index] is not None:
            raise MinootsError(f"the batch answer's result {position} has index {index!r}", body=answer)
        status = item.get("status")
        if not isinstance(status, int):
            raise MinootsError(f"the batch answer's result {position} has no status", body=answer)
        timer = item.get("timer")
        if status in (200, 201) and isinstance(timer, dict):
            placed[index] = BatchResult(index=offset + index, status=status, timer=timer)
        else:
            error = error_for(status, item.get("error"), fallback=f"HTTP {status}")
            placed[index] = BatchResult(index=offset + index, status=status, error=error)
    return [r for r in placed if r is not None]


__all__ = ["BATCH_MAX", "BatchResult", "TimerRequest"]
