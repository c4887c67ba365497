"""Reads on action runs, always scoped to the caller's tenant."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from django.db.models import Prefetch, QuerySet

from actions.models import ActionAttempt, ActionRun, RunStatus
from timers.models import Tenant, Timer
from timers.selectors import timers_visible


def timer_get_with_runs(*, tenant: Tenant | None, timer_id: UUID) -> Timer | None:
    """One timer of ``tenant`` (any tenant's for staff: None) with its runs and their attempts."""
    runs = ActionRun.objects.select_related("escalated_from").prefetch_related(
        Prefetch("attempt_records", queryset=ActionAttempt.objects.order_by("number"))
    )
    return (
        timers_visible(tenant=tenant)
        .prefetch_related(Prefetch("action_runs", queryset=runs))
        .filter(pk=timer_id)
        .first()
    )


def runs_failed_since(*, since: datetime, tenant: Tenant | None) -> QuerySet[ActionRun]:
    """Runs that failed (out of attempts, or permanently) at or after ``since``, oldest first;
    of ``tenant``'s timers, or every tenant's for None."""
    qs = ActionRun.objects.filter(status=RunStatus.FAILED, finished_at__gte=since)
    if tenant is not None:
        qs = qs.filter(timer__tenant=tenant)
    return qs.order_by("finished_at", "id")


def runs_by_id(*, run_ids: Sequence[UUID]) -> list[ActionRun]:
    """The runs with these ids, in that order (ids of no run are left out)."""
    found = ActionRun.objects.in_bulk(list(run_ids))
    return [found[run_id] for run_id in run_ids if run_id in found]


def runs_stuck(*, now: datetime) -> tuple[int, datetime | None]:
    """Runs still ``running`` past their lease (their worker died mid-attempt): how many, and
    the oldest lease's end (the partial index on running runs answers both)."""
    qs = ActionRun.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now)
    return qs.count(), qs.order_by("lease_expires_at").values_list("lease_expires_at", flat=True).first()


def runs_of_timers_count(*, timers: QuerySet[Timer]) -> int:
    """How many action runs (escalations included) these timers have."""
    return ActionRun.objects.filter(timer__in=timers.values("pk")).count()
