"""Action runs: create them when a timer fires, publish them, recover lost ones.

(The execution step — claim, run, record the attempt, retry, escalate, settle — lives in
``actions.execution``.)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from actions.bundle import BundleError, parse_bundle
from actions.models import ActionRun, RunStatus

if TYPE_CHECKING:
    from timers.engine import ClaimedTimer

log = logging.getLogger(__name__)


def runs_create_for_fired(*, timers: Sequence[ClaimedTimer]) -> list[UUID]:
    """Create one pending run per top-level action; return the runs to publish now (the first
    ``concurrency`` of each timer; the rest follow as earlier ones finish)."""
    now = timezone.now()
    runs: list[ActionRun] = []
    to_publish: list[UUID] = []
    for claimed in timers:
        try:
            bundle = parse_bundle(claimed.action_bundle)
        except BundleError:  # validated at create time; a stored bundle cannot be invalid
            log.exception("stored action bundle invalid", extra={"timer_id": str(claimed.id)})
            continue
        for position, spec in enumerate(bundle.actions):
            startable = position < bundle.concurrency
            # Runs beyond the concurrency limit wait with no next_attempt_at until a slot frees.
            run = ActionRun(
                timer_id=claimed.id, action_id=spec.id, kind=spec.kind, parameters=spec.parameters,
                position=position, next_attempt_at=now if startable else None,
            )
            runs.append(run)
            if startable:
                to_publish.append(run.id)
    ActionRun.objects.bulk_create(runs)
    return to_publish


def runs_publish(run_ids: Sequence[UUID], *, eta: datetime | None = None) -> int:
    """Publish ``run_action`` for each run. Never raises: the reconciler recovers what is lost."""
    from actions.tasks import run_action

    published = 0
    for run_id in run_ids:
        try:
            run_action.apply_async(args=[str(run_id)], eta=eta)
            published += 1
        except Exception:
            log.error("could not publish action run; the reconciler will recover it", exc_info=True)
            break
    return published


def runs_recover(*, now: datetime, limit: int) -> int:
    """Re-publish runs whose message was lost: pending and due for longer than the repair
    grace, or running past their lease (the worker died). The run's claim makes duplicates
    harmless."""
    grace = settings.MINOOTS_REPAIR_GRACE
    stale = list(
        ActionRun.objects.filter(
            Q(status=RunStatus.PENDING, next_attempt_at__lt=now - grace)
            | Q(status=RunStatus.RUNNING, lease_expires_at__lt=now)
        )
        .order_by("next_attempt_at")
        .values_list("id", flat=True)[:limit]
    )
    if stale:
        transaction.on_commit(lambda: runs_publish(stale))
    return len(stale)
