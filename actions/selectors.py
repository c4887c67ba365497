"""Reads on action runs, always scoped to the caller's tenant."""

from __future__ import annotations

from uuid import UUID

from django.db.models import Prefetch

from actions.models import ActionAttempt, ActionRun
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
