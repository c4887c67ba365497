"""Execute action runs: claim, run one attempt, record it, then retry, escalate or settle.

``run_execute`` is what the ``actions.run_action`` task calls; ``actions.batch`` drives many
first attempts through the same claim and the same ``runs_conclude``. The status changes
themselves are ``actions.transitions``'; this module decides which one applies.

Contract of a timer's runs (see DESIGN.md "Scheduling" step 4 and "Actions"):

- *Claim*: one conditional UPDATE moves a run to ``running`` when it is ``pending`` and due
  (``next_attempt_at <= now()``, the database clock) or when it is ``running`` past its lease
  (its worker died). A run is therefore never executed twice at once, and a duplicate or early
  message is a quiet no-op. The attempt row is written in the claim's transaction, so an
  attempt whose worker died is visible, and is closed as a transient failure by the next claim.
- *Tenant cap*: while another tenant has runs waiting, one tenant holds at most
  ``MINOOTS_TENANT_ACTION_CONCURRENCY`` worker slots (attempts in flight; a batch is one);
  the claim holds its other runs back, and a batch over the cap gives its remaining runs back
  when the next one's turn comes, ``pending`` and due about a second later, re-published by
  ``runs_republish_early`` (no attempt, no event; see ``transitions._within_tenant_cap``). A
  tenant alone is never held back.
- *Concurrency*: at most ``concurrency`` top-level runs of a timer are in progress (running,
  or pending with a ``next_attempt_at``, i.e. waiting for a retry). The others wait with
  ``next_attempt_at`` NULL and are started in ``position`` order as slots free up. Escalation
  runs are outside this limit: they exist because something already went wrong.
- *Retries*: a transient failure schedules ``next_attempt_at`` = now + backoffInitialMs ×
  backoffMultiplier^(n-1) (n = the failed attempt's number), jittered by ±20 %, raised to the
  server's ``Retry-After`` if that is longer, and capped by ``MINOOTS_MAX_BACKOFF`` whatever
  the hint; never below ``MINOOTS_MIN_BACKOFF``. Once the timer's runs, escalations included,
  have made ``MINOOTS_MAX_ATTEMPTS_PER_TIMER`` attempts, a failure is final (no retry storm).
  A retry due within ``MINOOTS_ARM_HORIZON`` is published with that ETA; a later one is
  published by the reconciler (``runs_recover``) once due.
- *Escalation*: when a run has had ``afterAttempts`` failed attempts, or has failed for good
  before reaching that many, its ``escalatesTo`` action gets a run of its own, once.
- *Settling*: when no run of the timer is pending or running, the timer is finished:
  ``settled`` if every run succeeded, otherwise ``failed`` naming every failed run's action id.
  An action whose escalation succeeded still counts as failed: the escalation reports the
  failure (pages someone, opens a ticket), it does not undo it. A failed escalation is named
  too, after the top-level actions.

Outcomes are serialised per timer by a row lock on the timer, so two runs finishing at once
cannot both believe the other is still running (and leave the timer ``fired`` forever).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, transaction
from django.db.models import F, Q, Sum
from django.db.models.functions import Now
from django.utils import timezone

from actions import queries, transitions
from actions.bundle import RetryPolicy
from actions.errors import ActionError, ParameterError
from actions.models import ActionRun, RunStatus
from actions.recording import storable_outcome
from actions.runners import ActionContext, ActionResult, get_runner
from actions.services import _marker as run_marker  # the publish marker's one spelling
from actions.services import runs_forget_published, runs_publish
from actions.transitions import WORKER_LOST, Claim, Finished, Outcome
from timers.models import Timer, TimerStatus
from timers.publishing import RUN_ACTIONS, publish
from timers.serializers import timer_json as timer_wire
from timers.services import timer_append_event, timer_fail, timers_settle

log = logging.getLogger(__name__)

JITTER = 0.2


def retry_delay(policy: RetryPolicy, *, failed_attempt: int, retry_after: float | None = None) -> timedelta:
    """Delay before the attempt after ``failed_attempt`` (1-based), as documented above."""
    cap_ms = settings.MINOOTS_MAX_BACKOFF.total_seconds() * 1000
    try:
        base_ms = policy.backoff_initial_ms * policy.backoff_multiplier ** (failed_attempt - 1)
    except OverflowError:
        base_ms = cap_ms
    delay_ms = min(base_ms, cap_ms) * random.uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay_ms = max(delay_ms, retry_after * 1000)
    floor_ms = settings.MINOOTS_MIN_BACKOFF.total_seconds() * 1000
    return timedelta(milliseconds=max(floor_ms, min(delay_ms, cap_ms)))


def runs_republish_early(run_ids: Sequence[UUID]) -> None:
    """Runs a claim skipped that are ``pending`` and due later — their message arrived before
    ``next_attempt_at`` (clock skew between worker and database, a duplicate), or their tenant
    was at its action concurrency cap (``transitions.runs_claim``, ``runs_release``) — are
    re-published for the remaining time on the database clock: one message per distinct
    remaining time (a single run's ``run_action``, or ``run_actions`` for the runs a batch
    skipped together, so they run as a batch again), whatever the reason.
    """
    if not run_ids:
        return
    rows = (
        ActionRun.objects.filter(pk__in=run_ids, status=RunStatus.PENDING, next_attempt_at__isnull=False)
        .annotate(db_now=Now())
        .values_list("pk", "next_attempt_at", "db_now")
    )
    by_remaining: dict[timedelta, list[UUID]] = {}
    for run_id, next_attempt_at, db_now in rows:
        assert next_attempt_at is not None  # filtered on next_attempt_at__isnull=False
        remaining = next_attempt_at - db_now
        if timedelta(0) < remaining <= settings.MINOOTS_ARM_HORIZON:
            by_remaining.setdefault(remaining, []).append(run_id)
    now = timezone.now()
    order = {run_id: i for i, run_id in enumerate(run_ids)}
    for remaining, ids in by_remaining.items():
        ids.sort(key=lambda run_id: order[run_id])  # a batch runs them in the order it had
        if len(ids) == 1:
            runs_publish(ids, eta=now + remaining)
        else:
            _publish_batch_later(ids, eta=now + remaining)


def _publish_batch_later(run_ids: Sequence[UUID], *, eta: datetime) -> None:
    """``runs_publish_batches`` with an ETA: one ``run_actions`` message per MINOOTS_ACTION_BATCH
    runs, each run marked as published (the reconciler leaves it alone) until its claim. Never
    raises: the reconciler recovers what is lost."""
    size = max(1, settings.MINOOTS_ACTION_BATCH)
    published: list[UUID] = []
    for start in range(0, len(run_ids), size):
        chunk = list(run_ids[start : start + size])
        try:
            publish(RUN_ACTIONS, args=[[str(run_id) for run_id in chunk]], eta=eta)
        except Exception:
            log.error("could not publish action runs; the reconciler will recover them", exc_info=True)
            break
        published += chunk
    if published:
        ttl = int((eta - timezone.now()).total_seconds() + settings.MINOOTS_ACTION_LEASE.total_seconds())
        try:
            cache.set_many({run_marker(run_id): 1 for run_id in published}, timeout=max(1, ttl))
        except Exception:
            log.warning("action run marker cache unavailable", exc_info=True)


# --- attempt -------------------------------------------------------------------------------


def timers_json(timers: list[Timer]) -> list[dict[str, Any]]:
    """The timers as the API shows them, for the default webhook body, rendered in one pass.

    ``actionBundle`` is left out: its parameters may carry another action's credentials
    (an Authorization header, a command's env) that a third-party receiver must not see.
    """
    rendered = [timer_wire(timer) for timer in timers]
    for timer in rendered:
        timer.pop("actionBundle", None)
    return rendered


def attempt_context(claim: Claim, *, timer_json: dict[str, Any] | None = None) -> ActionContext:
    run = claim.run
    return ActionContext(
        run_id=str(run.pk),
        timer_id=str(run.timer_id),
        tenant_id=run.timer.tenant_id,
        timer=timer_json if timer_json is not None else timers_json([run.timer])[0],
    )


def attempt_run(claim: Claim, *, timer_json: dict[str, Any] | None = None) -> Outcome:
    """Run one attempt of a claimed run (or report the lost one it stands for)."""
    if claim.attempt_id is None:
        return Outcome(succeeded=False, error=WORKER_LOST)
    context = attempt_context(claim, timer_json=timer_json)
    return outcome_of(lambda: get_runner(claim.run.kind).run(dict(claim.run.parameters), context), claim=claim)


def outcome_of(attempt: Callable[[], ActionResult], *, claim: Claim) -> Outcome:
    """What ``attempt()`` did, as an Outcome: its result, or the failure it raised."""
    try:
        result = attempt()
    except ParameterError as exc:
        return Outcome(succeeded=False, permanent=True, error=str(exc))
    except ActionError as exc:
        return Outcome(
            succeeded=False,
            permanent=exc.permanent,
            error=str(exc),
            retry_after=exc.retry_after,
            http_status=exc.http_status,
            exit_code=exc.exit_code,
            output=exc.output,
        )
    except Exception as exc:
        if isinstance(exc, SoftTimeLimitExceeded):
            return Outcome(succeeded=False, error="the worker's time limit interrupted the attempt")
        # A bug or an unforeseen condition: retrying blindly would repeat it.
        run = claim.run
        log.exception("action runner crashed", extra={"run_id": str(run.pk), "kind": run.kind})
        return Outcome(succeeded=False, permanent=True, error=f"internal error: {type(exc).__name__}: {exc}")
    return Outcome(
        succeeded=True,
        summary=result.summary,
        http_status=result.http_status,
        exit_code=result.exit_code,
        output=result.output,
    )


# --- conclude ------------------------------------------------------------------------------


def runs_conclude(finished: Sequence[Finished]) -> list[Finished]:
    """Record these attempts and move each run on: succeeded, retrying, or failed (then its
    escalation); start runs waiting for a concurrency slot; finish timers whose runs are all
    done. Return the outcomes that applied (stale ones, of runs taken over, are dropped).

    What the attempts returned is made storable first (``actions.recording``). A failure while
    recording one run never rolls back or re-runs the others of its batch: when the batch
    cannot be recorded together, each run is recorded on its own, and a run whose outcome
    still cannot be stored is recorded without its output (or, failing that, left to lease
    recovery, logged).
    """
    finished = [dataclasses.replace(f, outcome=storable_outcome(f.outcome)) for f in finished]
    if not finished:
        return []
    try:
        return _conclude(finished)
    except DatabaseError:
        log.exception("recording %d action outcomes together failed; recording them one by one", len(finished))
    held: list[Finished] = []
    for f in finished:
        try:
            held += _conclude([f])
        except DatabaseError as exc:
            log.exception("recording an action outcome failed", extra={"run_id": str(f.claim.run.pk)})
            bare = dataclasses.replace(
                f.outcome, output="", summary=f.outcome.summary[:80], error=f"recording failed: {type(exc).__name__}"
            )
            try:
                held += _conclude([dataclasses.replace(f, outcome=bare)])
            except DatabaseError:
                log.exception("recording an action outcome failed twice; lease recovery will retry it")
    return held


def _conclude(finished: Sequence[Finished]) -> list[Finished]:
    now = timezone.now()
    timer_ids = sorted({f.claim.run.timer_id for f in finished})
    to_publish: list[UUID] = []
    with transaction.atomic():
        # Serialises outcomes per timer (see module docstring), in id order (no deadlocks);
        # the status read under the lock says which were cancelled meanwhile.
        # NO KEY: event and run inserts referencing the timer are not blocked.
        cancelled = {
            timer_id
            for timer_id, status in Timer.objects.select_for_update(no_key=True)
            .filter(pk__in=timer_ids)
            .order_by("pk")
            .values_list("pk", "status")
            if status == TimerStatus.CANCELLED
        }
        # Runs before attempts, as the claim locks them (a lease-recovery claim closes the
        # attempts it finds open): the same order on both sides, so no deadlock.
        held = transitions.runs_succeed_held([f for f in finished if f.outcome.succeeded], at=now)
        failures = [f for f in finished if not f.outcome.succeeded]
        if failures:
            held += transitions.runs_held(failures)
            transitions.attempts_record(failures, at=now)
        slot_freed: dict[UUID, int] = {
            f.claim.run.timer_id: f.claim.bundle.concurrency for f in held if f.outcome.succeeded
        }
        for f in held:
            if f.outcome.succeeded:
                continue
            policy = f.claim.bundle.retry_policy
            retrying = transitions.retry_policy_allows(policy, f.claim, f.outcome)
            if retrying and _attempts_of_timer(f.claim.run.timer_id) >= settings.MINOOTS_MAX_ATTEMPTS_PER_TIMER:
                retrying = False
                budget = settings.MINOOTS_MAX_ATTEMPTS_PER_TIMER
                f = dataclasses.replace(
                    f,
                    outcome=dataclasses.replace(
                        f.outcome,
                        error=f"{f.outcome.error} (not retried: the timer's actions made {budget} attempts, "
                        "MINOOTS_MAX_ATTEMPTS_PER_TIMER)",
                    ),
                )
            if f.claim.run.timer_id in cancelled:
                # Cancelled after it fired: this attempt is recorded, nothing follows it.
                if retrying:
                    transitions.run_cancel_retry(f, at=now)
                else:
                    transitions.run_fail(f, at=now)
                continue
            if retrying:
                delay = retry_delay(policy, failed_attempt=f.claim.number, retry_after=f.outcome.retry_after)
                transitions.run_retry(f, retry_at=now + delay)
            else:
                transitions.run_fail(f, at=now)
                slot_freed[f.claim.run.timer_id] = f.claim.bundle.concurrency
            to_publish += _escalate(f.claim, failed_for_good=not retrying, now=now)
        # One read of where each of these timers' runs stand: a run waiting for a slot is
        # pending, so a timer given slots below stays busy and is not finished.
        standing = queries.timers_runs(sorted(slot_freed))
        for timer_id, concurrency in sorted(slot_freed.items()):
            if standing[timer_id].waiting:
                to_publish += start_waiting(timer_id=timer_id, concurrency=concurrency, now=now)
        timers_finish(standing)
        if to_publish:
            transaction.on_commit(lambda: runs_publish(to_publish))
    return held


def _attempts_of_timer(timer_id: UUID) -> int:
    """Attempts made by all runs of the timer so far, escalations included."""
    # Those of the current chains: an operator's retry starts each chain again (retry_base).
    total = ActionRun.objects.filter(timer_id=timer_id).aggregate(total=Sum(F("attempts") - F("retry_base")))["total"]
    return int(total or 0)


def _escalate(claim: Claim, *, failed_for_good: bool, now: datetime) -> list[UUID]:
    spec = claim.spec
    if spec is None or spec.escalation is None:
        return []
    escalation = spec.escalation
    if claim.number < escalation.after_attempts and not failed_for_good:
        return []
    run = claim.run
    if ActionRun.objects.filter(timer_id=run.timer_id, action_id=escalation.escalates_to.id).exists():
        return []
    target = escalation.escalates_to
    escalated = ActionRun.objects.create(
        timer_id=run.timer_id,
        action_id=target.id,
        kind=target.kind,
        parameters=target.parameters,
        position=run.position,
        escalation_level=run.escalation_level + 1,
        escalated_from=run,
        next_attempt_at=now,
    )
    timer_append_event(
        timer_id=run.timer_id,
        kind="action.escalated",
        runId=str(run.pk),
        actionId=run.action_id,
        escalatesTo=target.id,
        escalationRunId=str(escalated.pk),
        failedAttempts=claim.number,
    )
    return [escalated.pk]


def start_waiting(*, timer_id: UUID, concurrency: int, now: datetime) -> list[UUID]:
    """Give free concurrency slots to waiting top-level runs, in position order."""
    top = ActionRun.objects.filter(timer_id=timer_id, escalation_level=0)
    active = top.filter(
        Q(status=RunStatus.RUNNING) | Q(status=RunStatus.PENDING, next_attempt_at__isnull=False)
    ).count()
    slots = concurrency - active
    if slots <= 0:
        return []
    waiting = list(
        top.filter(status=RunStatus.PENDING, next_attempt_at__isnull=True)
        .order_by("position")
        .values_list("pk", flat=True)[:slots]
    )
    if waiting:
        ActionRun.objects.filter(pk__in=waiting, next_attempt_at__isnull=True).update(next_attempt_at=now)
    return waiting


def timers_finish_if_done(timer_ids: Sequence[UUID]) -> None:
    """Settle (every run succeeded) or fail (naming each failed run's action) the timers of
    ``timer_ids`` that have no run pending or running any more."""
    timers_finish(queries.timers_runs(timer_ids))


def timers_finish(standing: dict[UUID, queries.TimerRuns]) -> None:
    """``timers_finish_if_done`` from a read of where the timers' runs stand
    (``queries.timers_runs``, in this transaction): the clean ones settle in one statement."""
    clean = [t for t, runs in sorted(standing.items()) if not runs.busy and not runs.failed]
    if clean:
        timers_settle(timer_ids=clean)
    for timer_id, runs in sorted(standing.items()):
        if not runs.busy and runs.failed:
            timer_fail(timer_id=timer_id, failed_actions=list(runs.failed))


# --- entry point ---------------------------------------------------------------------------


# How long a worker that lost the database mid-batch waits for it to come back to end the
# leases of the runs it could not conclude (then the task's own retry, or another worker,
# recovers them at once instead of after MINOOTS_ACTION_LEASE).
OUTAGE_WAIT_SECONDS = 30.0


@contextmanager
def leases_ended_on_database_outage(run_ids: Sequence[UUID]) -> Iterator[None]:
    """Around the attempts of claimed runs: should the database fail (a restart, a failover),
    end the leases of those still ``running`` once it answers again, so that the task's retry
    claims them (their attempts recorded as lost) rather than finding them leased for minutes
    (``transitions.runs_end_leases``; concluded runs are left alone). Re-raises the error."""
    try:
        yield
    except (OperationalError, InterfaceError):
        deadline = time.monotonic() + OUTAGE_WAIT_SECONDS
        while True:
            try:
                close_old_connections()
                ended = transitions.runs_end_leases(run_ids=run_ids, at=timezone.now())
                if ended:
                    log.warning(
                        "database failed mid-attempt: %d run(s) released for recovery",
                        len(ended),
                        extra={"event": "leases_ended"},
                    )
                break
            except (OperationalError, InterfaceError):
                if time.monotonic() > deadline:
                    break  # the lease recovers them
                time.sleep(1.0)
        raise


def run_execute(*, run_id: str | UUID) -> bool:
    """Claim and execute one attempt of ``run_id``; False when there was nothing to do
    (unknown id, already claimed, finished, or not yet due)."""
    try:
        run_uuid = run_id if isinstance(run_id, UUID) else UUID(str(run_id))
    except ValueError:
        log.warning("run_action with an invalid run id", extra={"run_id": str(run_id)})
        return False
    claims = transitions.runs_claim(run_ids=[run_uuid])
    if not claims:
        runs_republish_early([run_uuid])
        return False
    claim = claims[0]
    with leases_ended_on_database_outage([run_uuid]):
        runs_forget_published([run_uuid])
        started = time.monotonic()
        outcome = attempt_run(claim)
        applied = runs_conclude([Finished(claim=claim, outcome=outcome, seconds=time.monotonic() - started)])
    log.info(
        "action attempt %s",
        _status_word(outcome, claim) if applied else "stale",
        extra={
            "run_id": str(run_uuid),
            "timer_id": str(claim.run.timer_id),
            "attempt": claim.number,
            "event": "action",
        },
    )
    return True


def _status_word(outcome: Outcome, claim: Claim) -> str:
    if outcome.succeeded:
        return RunStatus.SUCCEEDED
    if transitions.retry_policy_allows(claim.bundle.retry_policy, claim, outcome):
        return RunStatus.PENDING
    return RunStatus.FAILED
