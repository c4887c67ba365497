"""Action runs: create them when a timer fires, publish them, recover lost ones.

``runs_create_for_fired`` and ``runs_recover`` are what the timers domain calls through its
ports (registered in ``ActionsConfig.ready``). The status changes of a run live in
``actions.transitions``; the execution step that drives them in ``actions.execution``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from actions.bundle import parse_bundle
from actions.errors import ParameterError
from actions.holders import runs_held_by_dead_workers, runs_lost_in_transit, runs_of_dead_workers, runs_unmark
from actions.models import ActionRun, RunStatus
from actions.runners import RUNNERS
from timers.ports import ClaimedTimer
from timers.publishing import RUN_ACTION, RUN_ACTIONS, publish
from timers.services import Conflict, timer_fail, timer_reopen

log = logging.getLogger(__name__)

_MARKER_PREFIX = "run:"


def runs_create_for_fired(timers: Sequence[ClaimedTimer]) -> None:
    """Create one pending run per top-level action of each fired timer, in the claim's
    transaction; after commit, publish the first ``concurrency`` of each timer (the rest follow
    as earlier ones finish).

    The first attempts are due at the timer's ``fired_at`` (database clock), so the run claim,
    which compares with the database ``now()``, never finds them early.
    """
    runs: list[ActionRun] = []
    to_publish: list[UUID] = []
    for claimed in timers:
        try:
            bundle = parse_bundle(claimed.action_bundle)
            unknown = [spec.kind for spec in bundle.actions if spec.kind not in RUNNERS]
            if unknown:
                raise ParameterError("actionBundle.actions", f"unknown kind '{unknown[0][:32]}'")
        except ParameterError as exc:  # validated at create time; only a hand-edited row gets here
            log.error("stored action bundle invalid: %s", exc, extra={"timer_id": str(claimed.id)})
            timer_fail(timer_id=claimed.id, failed_actions=[f"(invalid actionBundle: {exc})"])
            continue
        for position, spec in enumerate(bundle.actions):
            startable = position < bundle.concurrency
            # Runs beyond the concurrency limit wait with no next_attempt_at until a slot frees.
            run = ActionRun(
                timer_id=claimed.id,
                action_id=spec.id,
                kind=spec.kind,
                parameters=spec.parameters,
                position=position,
                next_attempt_at=claimed.fired_at if startable else None,
            )
            runs.append(run)
            if startable:
                to_publish.append(run.id)
    ActionRun.objects.bulk_create(runs)
    if to_publish:
        transaction.on_commit(lambda: runs_publish_batches(to_publish))


def _marker(run_id: UUID | str) -> str:
    return f"{_MARKER_PREFIX}{run_id}"


def runs_publish(run_ids: Sequence[UUID], *, eta: datetime | None = None) -> int:
    """Publish ``run_action`` for each run. Never raises: the reconciler recovers what is lost.

    Each published run gets a marker in the cache (Redis in production) until a worker claims
    it, so the reconciler does not re-publish runs that merely wait in a busy queue. Markers
    and messages live in the same Redis: when Redis loses the messages it loses the markers.
    """
    now = timezone.now()
    if eta is not None and eta <= now:
        eta = None
    published: list[UUID] = []
    for run_id in run_ids:
        try:
            publish(RUN_ACTION, args=[str(run_id)], eta=eta)
            published.append(run_id)
        except Exception:
            log.error("could not publish action run; the reconciler will recover it", exc_info=True)
            break
    if published:
        wait = (eta - now).total_seconds() if eta is not None else 0.0
        ttl = int(wait + settings.MINOOTS_ACTION_LEASE.total_seconds())
        try:
            cache.set_many({_marker(run_id): 1 for run_id in published}, timeout=ttl)
        except Exception:
            log.warning("action run marker cache unavailable", exc_info=True)
    return len(published)


def runs_publish_batches(run_ids: Sequence[UUID]) -> int:
    """Publish first attempts in chunks of MINOOTS_ACTION_BATCH, one ``run_actions`` message
    each (see actions.batch). Never raises; returns how many runs were published."""
    size = max(1, settings.MINOOTS_ACTION_BATCH)
    published: list[UUID] = []
    for start in range(0, len(run_ids), size):
        chunk = list(run_ids[start : start + size])
        try:
            publish(RUN_ACTIONS, args=[[str(run_id) for run_id in chunk]])
        except Exception:
            log.error("could not publish action runs; the reconciler will recover them", exc_info=True)
            break
        published += chunk
    if published:
        try:
            cache.set_many(
                {_marker(run_id): 1 for run_id in published}, timeout=int(settings.MINOOTS_ACTION_LEASE.total_seconds())
            )
        except Exception:
            log.warning("action run marker cache unavailable", exc_info=True)
    return len(published)


def runs_forget_published(run_ids: Sequence[UUID]) -> None:
    """Drop the markers of claimed runs: their message has been consumed."""
    try:
        cache.delete_many([_marker(run_id) for run_id in run_ids])
    except Exception:
        log.warning("action run marker cache unavailable", exc_info=True)


def runs_recover(now: datetime, limit: int) -> int:
    """Re-publish runs whose message was lost; return how many.

    - ``pending`` runs due for longer than the repair grace with no publish marker: their
      message was lost, or never existed (a retry scheduled beyond the arm horizon).
    - ``running`` runs past their lease: the worker died mid-attempt.

    Runs waiting for a concurrency slot (``next_attempt_at`` NULL) are never published here:
    the run that frees the slot starts them. The run's claim makes duplicates harmless.
    """
    from actions import transitions  # noqa: PLC0415 (transitions imports this module)

    grace = settings.MINOOTS_REPAIR_GRACE
    transitions.runs_cancel_lost(now=now, limit=limit)
    # Runs whose worker is gone (actions.holders): a running one's lease ends now, so it is
    # among the lost below; a pending one's message died with the worker, marker or not.
    in_flight = list(
        ActionRun.objects.filter(status=RunStatus.RUNNING, lease_expires_at__gte=now)
        .order_by("lease_expires_at")
        .values_list("id", "worker")[:limit]
    )
    orphaned = set(transitions.runs_end_leases(run_ids=runs_of_dead_workers(in_flight), at=now))
    overdue = list(
        ActionRun.objects.filter(
            status=RunStatus.PENDING, next_attempt_at__isnull=False, next_attempt_at__lt=now - grace
        )
        .order_by("next_attempt_at")
        .values_list("id", flat=True)[:limit]
    )
    lost = list(
        ActionRun.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now)
        .order_by("lease_expires_at")
        .values_list("id", flat=True)[: max(0, limit - len(overdue))]
    )
    candidates = overdue + lost
    overdue_set = set(overdue)
    if candidates:
        try:
            marked = cache.get_many([_marker(run_id) for run_id in candidates])
        except Exception:
            marked = {}
        published = [r for r in candidates if _marker(r) in marked]
        orphaned |= set(runs_held_by_dead_workers(published, running=False))
        # Published, and its message lost with a worker that died before it could mark it.
        orphaned |= set(runs_lost_in_transit([r for r in published if r not in orphaned and r in overdue_set]))
        candidates = [run_id for run_id in candidates if _marker(run_id) not in marked or run_id in orphaned]
    if orphaned:
        runs_unmark(list(orphaned))
        log.warning(
            "recovering %d action run(s) of a worker that is gone", len(orphaned), extra={"event": "runs_orphaned"}
        )
    if candidates:
        # Many at once (a dead worker's hundreds) in batches, one claim per chunk; a few alone.
        many = len(candidates) > settings.MINOOTS_ACTION_BATCH
        transaction.on_commit(lambda: (runs_publish_batches if many else runs_publish)(candidates))
    return len(candidates)


def run_retry(*, run_id: UUID, by: str) -> ActionRun:
    """An operator's retry of one failed action run: a new chain of attempts under the bundle's
    retry policy; its timer goes back from ``failed`` to ``fired`` (event ``retried``) and settles
    or fails again when its runs end. A Conflict when the run is not failed (or its timer can
    no longer take it: cancelled, say)."""
    from actions import transitions  # noqa: PLC0415 (transitions imports this module)

    now = timezone.now()
    with transaction.atomic():
        run = ActionRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            raise Conflict("Action run not found", details={"runId": str(run_id)})
        if run.status != RunStatus.FAILED:
            raise Conflict(
                f"Action run is {run.status}; only a failed run can be retried",
                details={"runId": str(run_id), "status": run.status},
            )
        if not timer_reopen(timer_id=run.timer_id, by=by, run_ids=[run.pk], at=now):
            raise Conflict(
                "The run's timer can no longer take a retry",
                details={"runId": str(run_id), "timerId": str(run.timer_id)},
            )
        transitions.runs_reopen(run_ids=[run.pk], at=now)
        transaction.on_commit(lambda: runs_publish([run.pk]))
    run.refresh_from_db()
    log.info("action run retried", extra={"run_id": str(run.pk), "timer_id": str(run.timer_id), "event": "retried"})
    return run


def runs_retry_failed(*, since: datetime, by: str, tenant_id: str | None = None, limit: int = 10_000) -> int:
    """``run_retry`` for every run that failed since ``since`` (of ``tenant_id`` only, if given),
    at most ``limit``, each timer reopened once: return how many runs were retried."""
    from actions import transitions  # noqa: PLC0415 (transitions imports this module)

    failed = ActionRun.objects.filter(status=RunStatus.FAILED, finished_at__gte=since)
    if tenant_id is not None:
        failed = failed.filter(timer__tenant_id=tenant_id)
    by_timer: dict[UUID, list[UUID]] = {}
    for run_id, timer_id in failed.order_by("finished_at").values_list("pk", "timer_id")[:limit]:
        by_timer.setdefault(timer_id, []).append(run_id)
    retried: list[UUID] = []
    now = timezone.now()
    for timer_id, run_ids in by_timer.items():
        with transaction.atomic():
            if timer_reopen(timer_id=timer_id, by=by, run_ids=run_ids, at=now):
                retried += transitions.runs_reopen(run_ids=run_ids, at=now)
    if retried:
        runs_publish_batches(retried)
    log.info("failed action runs retried", extra={"count": len(retried), "event": "retried"})
    return len(retried)
