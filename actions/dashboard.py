"""Reads on action runs for the operator dashboard, bounded like ``timers.dashboard``.

Retrying runs are read through the partial index on pending runs' ``next_attempt_at``,
running ones through the one on running runs' lease, failed ones through
``actionrun_failed_finished``; only the newest few are listed, counts stop at ``COUNT_CAP``.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from actions.models import ActionRun, RunStatus
from timers.dashboard import Count, capped_count

LISTED = 10


def _runs(tenant_id: str | None) -> QuerySet[ActionRun]:
    qs = ActionRun.objects.all()
    return qs if tenant_id is None else qs.filter(timer__tenant_id=tenant_id)


def runs_retrying(*, tenant_id: str | None) -> tuple[Count, list[ActionRun]]:
    """Pending runs that failed at least once and wait for their next attempt: how many, and
    the ones due next."""
    qs = _runs(tenant_id).filter(status=RunStatus.PENDING, attempts__gt=0, next_attempt_at__isnull=False)
    listed = list(qs.select_related("timer").order_by("next_attempt_at")[:LISTED])
    return capped_count(qs), listed


def runs_running(*, tenant_id: str | None) -> Count:
    return capped_count(_runs(tenant_id).filter(status=RunStatus.RUNNING, lease_expires_at__isnull=False))


def runs_failed_since(*, tenant_id: str | None, since: datetime) -> tuple[Count, list[ActionRun]]:
    """Runs that failed for good since ``since``: how many, and the newest."""
    qs = _runs(tenant_id).filter(status=RunStatus.FAILED, finished_at__gte=since)
    listed = list(qs.select_related("timer").order_by("-finished_at")[:LISTED])
    return capped_count(qs), listed
