"""Retention: delete terminal timers that ended long ago, with their events and action runs.

Deleting is not a status change, so this lives beside the services rather than in them. Only
``settled``, ``failed`` and ``cancelled`` timers go, by the time they ended (``settledAt``,
which a failed timer sets too, or ``cancelledAt``); the cascade takes their events, action
runs and attempts. Batches are walked by id (keyset), each deleted in its own transaction, so
a long prune holds no lock for long and resumes where it stopped when run again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from uuid import UUID

from django.db import transaction
from django.db.models import Q, QuerySet

from timers import dashboard
from timers.models import TERMINAL_STATUSES, Timer, TimerEvent


def timers_prunable(*, ended_before: datetime, tenant_id: str | None = None) -> QuerySet[Timer]:
    """Terminal timers that ended before ``ended_before`` (of one tenant, or all)."""
    qs = Timer.objects.filter(status__in=TERMINAL_STATUSES).filter(
        Q(settled_at__lt=ended_before) | Q(settled_at__isnull=True, cancelled_at__lt=ended_before)
    )
    return qs if tenant_id is None else qs.filter(tenant_id=tenant_id)


def prunable_counts(*, ended_before: datetime, tenant_id: str | None = None) -> dict[str, int]:
    """What a prune would delete of this domain's rows: timers and their events (a dry run;
    action runs are counted by ``actions.selectors.runs_of_timers_count``)."""
    timers = timers_prunable(ended_before=ended_before, tenant_id=tenant_id)
    return {
        "timers": timers.count(),
        "events": TimerEvent.objects.filter(timer__in=timers.values("pk")).count(),
    }


def _forgotten(deleted: Counter[str]) -> Counter[str]:
    """``deleted``, once the dashboard forgot the histograms that count those timers' fires."""
    if deleted:
        dashboard.histograms_forget()
    return deleted


def timers_prune(
    *,
    ended_before: datetime,
    batch: int = 1000,
    tenant_id: str | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Counter[str]:
    """Delete the timers ``timers_prunable`` finds, ``batch`` at a time. Return the rows
    deleted by model label (``timers.Timer``, ``timers.TimerEvent``, ``actions.ActionRun``…).

    ``on_batch(n)`` is called after each batch is committed (a progress bar). A timer that
    leaves the set meanwhile (none can: terminal timers stay terminal) is simply not deleted.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    deleted: Counter[str] = Counter()
    after: UUID | None = None
    while True:
        qs = timers_prunable(ended_before=ended_before, tenant_id=tenant_id).order_by("pk")
        if after is not None:
            qs = qs.filter(pk__gt=after)
        ids = list(qs.values_list("pk", flat=True)[:batch])
        if not ids:
            return _forgotten(deleted)
        with transaction.atomic():
            _, per_model = timers_prunable(ended_before=ended_before, tenant_id=tenant_id).filter(pk__in=ids).delete()
        deleted.update(per_model)
        n = per_model.get(Timer._meta.label, 0)
        after = ids[-1]
        if on_batch is not None:
            on_batch(n)
        if len(ids) < batch:
            return _forgotten(deleted)
