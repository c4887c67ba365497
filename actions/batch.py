"""Execute a batch of first attempts with a few queries per batch instead of ~20 per run.

When 10,000 timers fire in the same second, their runs are published in chunks of
MINOOTS_ACTION_BATCH; each chunk is one ``actions.run_actions`` message. A batch:

1. claims every pending, due run of the chunk with one conditional UPDATE (runs already
   claimed elsewhere, not yet due, or finished are skipped: duplicates stay harmless) and
   writes their attempt rows in bulk, in the claim's transaction (as ``run_execute`` does);
2. runs each attempt (the I/O), one after the other; the worker's threads and processes
   give the parallelism;
3. concludes the successes in bulk under the timers' row locks: attempts, runs, events,
   waiting runs started, timers settled. Failures go through ``execution._conclude`` one by
   one, the same code as single runs (retry, escalation, failure), so both paths agree.

Lease recovery (runs left ``running``) stays on the single-run path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, F, Value
from django.db.models.functions import Now
from django.utils import timezone

from actions import execution
from actions.bundle import ActionBundle, BundleError, parse_bundle
from actions.models import ActionAttempt, ActionRun, AttemptOutcome, RunStatus
from actions.services import runs_forget_published, runs_publish
from timers import metrics
from timers.models import Timer, TimerEvent, TimerStatus

log = logging.getLogger(__name__)

FLUSH_SECONDS = 2.0


def _claim_many(run_ids: Sequence[UUID]) -> list[execution.Claim]:
    lease_end = ExpressionWrapper(
        Now() + Value(settings.MINOOTS_ACTION_LEASE, output_field=DurationField()), output_field=DateTimeField()
    )
    with transaction.atomic():
        ids = list(
            ActionRun.objects.select_for_update(skip_locked=True)
            .filter(pk__in=run_ids, status=RunStatus.PENDING, next_attempt_at__lte=Now())
            .values_list("pk", flat=True)
        )
        if not ids:
            return []
        ActionRun.objects.filter(pk__in=ids).update(
            status=RunStatus.RUNNING, attempts=F("attempts") + 1, lease_expires_at=lease_end, next_attempt_at=None
        )
        order = {run_id: i for i, run_id in enumerate(run_ids)}  # run them in the order published
        runs = sorted(ActionRun.objects.select_related("timer").filter(pk__in=ids), key=lambda r: order[r.pk])
        now = timezone.now()
        attempts = ActionAttempt.objects.bulk_create(
            [ActionAttempt(run=run, number=run.attempts, started_at=now) for run in runs]
        )
    bundles: dict[UUID, ActionBundle] = {}
    claims = []
    for run, attempt in zip(runs, attempts, strict=True):
        if run.timer_id not in bundles:
            try:
                bundles[run.timer_id] = parse_bundle(run.timer.action_bundle)
            except BundleError:
                bundles[run.timer_id] = ActionBundle(actions=())
        bundle = bundles[run.timer_id]
        claims.append(
            execution.Claim(
                run=run, number=run.attempts, attempt_id=attempt.pk, bundle=bundle,
                spec=execution.spec_for(bundle, run.action_id),
            )
        )
    return claims


def _finish_attempts(rows: list[tuple[int | None, int | None, int | None, int, str]], *, now: datetime) -> None:
    """Close many successful attempts: one UPDATE ... FROM (VALUES ...) on Postgres (Django's
    bulk_update builds a CASE per field and row, which costs more CPU than the HTTP calls)."""
    rows = [r for r in rows if r[0] is not None]
    if connection.vendor == "postgresql":
        from psycopg2.extras import execute_values

        table = ActionAttempt._meta.db_table
        with connection.cursor() as cur:
            execute_values(
                cur.cursor,
                f"""UPDATE {table} AS a
                       SET finished_at = v.finished_at, outcome = 'succeeded', error = '',
                           http_status = v.http_status::smallint, exit_code = v.exit_code::integer,
                           duration_ms = v.duration_ms::integer, output_excerpt = v.output_excerpt
                      FROM (VALUES %s) AS v(id, finished_at, http_status, exit_code, duration_ms, output_excerpt)
                     WHERE a.id = v.id AND a.finished_at IS NULL""",
                [(pk, now, status, code, ms, output) for pk, status, code, ms, output in rows],
            )
        return
    still_open = set(
        ActionAttempt.objects.filter(pk__in=[r[0] for r in rows], finished_at__isnull=True).values_list("pk", flat=True)
    )
    ActionAttempt.objects.bulk_update(
        [
            ActionAttempt(pk=pk, finished_at=now, outcome=AttemptOutcome.SUCCEEDED, http_status=status,
                          exit_code=code, duration_ms=ms, error="", output_excerpt=output)
            for pk, status, code, ms, output in rows
            if pk in still_open
        ],
        ["finished_at", "outcome", "http_status", "exit_code", "duration_ms", "error", "output_excerpt"],
    )


def _conclude_successes(done: list[tuple[execution.Claim, execution.Outcome, float]]) -> None:
    now = timezone.now()
    timer_ids = sorted({claim.run.timer_id for claim, _, _ in done})
    to_publish: list[UUID] = []
    settled: list[tuple[UUID, str]] = []
    with transaction.atomic():
        # Same per-timer serialisation as execution._conclude, taken in id order (no deadlocks).
        timers = {
            pk: (version, status, tenant)
            for pk, version, status, tenant in Timer.objects.select_for_update(no_key=True)
            .filter(pk__in=timer_ids)
            .order_by("pk")
            .values_list("pk", "state_version", "status", "tenant_id")
        }
        current = dict(
            ActionRun.objects.filter(pk__in=[c.run.pk for c, _, _ in done], status=RunStatus.RUNNING).values_list(
                "pk", "attempts"
            )
        )
        _finish_attempts(
            [
                (claim.attempt_id, outcome.http_status, outcome.exit_code, max(0, int(seconds * 1000)),
                 execution.excerpt(outcome.output))
                for claim, outcome, seconds in done
            ],
            now=now,
        )
        # A run whose lease expired meanwhile belongs to whoever took it over.
        mine = [(c, o, s) for c, o, s in done if current.get(c.run.pk) == c.number]
        by_summary: dict[str, list[UUID]] = {}
        for claim, outcome, _ in mine:
            by_summary.setdefault(outcome.summary[:500], []).append(claim.run.pk)
        for summary, run_pks in by_summary.items():  # usually one: "HTTP 200"
            # Still RUNNING (checked under the timer locks above): a run taken over after its
            # lease expired is left to its new owner.
            ActionRun.objects.filter(pk__in=run_pks, status=RunStatus.RUNNING).update(
                status=RunStatus.SUCCEEDED, finished_at=now, lease_expires_at=None, last_error="", result_summary=summary
            )
        TimerEvent.objects.bulk_create(
            [
                TimerEvent(
                    timer_id=claim.run.timer_id, kind="action.succeeded", occurred_at=now,
                    state_version=timers[claim.run.timer_id][0],
                    data=execution.event_data(claim, outcome, summary=outcome.summary[:200]),
                )
                for claim, outcome, _ in mine
            ]
        )
        concurrency = {c.run.timer_id: c.bundle.concurrency for c, _, _ in mine}
        waiting = set(
            ActionRun.objects.filter(
                timer_id__in=timer_ids, status=RunStatus.PENDING, next_attempt_at__isnull=True
            ).values_list("timer_id", flat=True)
        )
        for timer_id in sorted(waiting & set(concurrency)):
            to_publish += execution.start_waiting(timer_id=timer_id, concurrency=concurrency[timer_id], now=now)
        busy = set(
            ActionRun.objects.filter(timer_id__in=timer_ids, status__in=[RunStatus.PENDING, RunStatus.RUNNING])
            .values_list("timer_id", flat=True)
        )
        finished = [t for t in timer_ids if t not in busy and timers[t][1] == TimerStatus.FIRED]
        with_failures = set(
            ActionRun.objects.filter(timer_id__in=finished, status=RunStatus.FAILED).values_list("timer_id", flat=True)
        )
        clean = [t for t in finished if t not in with_failures]
        if clean:
            Timer.objects.filter(pk__in=clean, status=TimerStatus.FIRED).update(
                status=TimerStatus.SETTLED, settled_at=now, state_version=F("state_version") + 1
            )
            TimerEvent.objects.bulk_create(
                [
                    TimerEvent(timer_id=t, kind="settled", occurred_at=now, state_version=timers[t][0] + 1, data={})
                    for t in clean
                ]
            )
            settled = [(t, timers[t][2]) for t in clean]
        for timer_id in sorted(with_failures):
            execution.finish_timer_if_done(timer_id)
        if to_publish:
            transaction.on_commit(lambda: runs_publish(to_publish))
    for claim, _, seconds in mine:
        metrics.action_attempt(claim.run.kind, "success", seconds)
    for _timer_id, tenant in settled:
        metrics.timer_transition(tenant, "settled")
    if len(mine) != len(done):
        log.warning("stale action outcomes ignored", extra={"event": "action", "count": len(done) - len(mine)})


def _renew_lease(claim: execution.Claim) -> bool:
    """Extend the run's lease from now, if this worker still holds it. Each attempt starts with
    a full lease, so the reconciler never hands a run to another worker while it executes."""
    lease_end = ExpressionWrapper(
        Now() + Value(settings.MINOOTS_ACTION_LEASE, output_field=DurationField()), output_field=DateTimeField()
    )
    return bool(
        ActionRun.objects.filter(pk=claim.run.pk, status=RunStatus.RUNNING, attempts=claim.number).update(
            lease_expires_at=lease_end
        )
    )


def runs_execute_batch(*, run_ids: Sequence[str | UUID]) -> int:
    """Claim and run one attempt of each due run in ``run_ids``; return how many ran.

    Successes are recorded together, but at least every FLUSH_SECONDS: a slow attempt in the
    chunk never leaves earlier successes unrecorded for long (a crash then would repeat them
    after their lease).
    """
    ids = []
    for raw in run_ids:
        try:
            ids.append(raw if isinstance(raw, UUID) else UUID(str(raw)))
        except ValueError:
            log.warning("run_actions with an invalid run id", extra={"run_id": str(raw)})
    claims = _claim_many(ids)
    if not claims:
        return 0
    runs_forget_published([c.run.pk for c in claims])
    successes: list[tuple[execution.Claim, execution.Outcome, float]] = []
    rendered = execution.timers_json([c.run.timer for c in claims])
    last_flush = time.monotonic()
    ran = 0
    for claim, timer_json in zip(claims, rendered, strict=True):
        if claim is not claims[0] and not _renew_lease(claim):
            continue  # the lease expired while earlier attempts ran; another worker owns it now
        started = time.monotonic()
        outcome = execution.attempt_run(claim, timer_json=timer_json)
        ran += 1
        if outcome.succeeded:
            successes.append((claim, outcome, time.monotonic() - started))
        else:
            execution.conclude(claim, outcome, started)
        if successes and time.monotonic() - last_flush > FLUSH_SECONDS:
            _conclude_successes(successes)
            successes, last_flush = [], time.monotonic()
    if successes:
        _conclude_successes(successes)
    return ran
