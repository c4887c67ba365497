"""Every change of ``ActionRun.status``: one function per transition, with its attempt rows,
its timer event and its metric (see DESIGN.md "Scheduling" step 4).

- ``runs_claim``: pending and due -> running, or running past its lease -> running again
  (lease recovery: its worker died; the attempt it left open is closed as a transient
  failure). One predicate, for single runs and batches alike. A pending run whose tenant is
  at its action concurrency cap while another tenant waits stays pending, due a moment later
  (``_within_tenant_cap``).
- ``runs_release``: running -> pending for claimed runs whose attempt never started (a batch
  giving back its queued runs to a tenant over its cap): the claim is undone.
- ``runs_succeed``: running -> succeeded.
- ``run_retry``: running -> pending with ``next_attempt_at`` (a transient failure).
- ``run_fail``: running -> failed (permanent, or out of attempts).

The outcome transitions apply only to runs this worker still holds (``running`` with the
attempt number it claimed, row-locked here), so an outcome that arrives after another worker
took the run over is dropped, never applied twice. Nothing else assigns ``ActionRun.status``.

A ``running`` run's ``next_attempt_at`` says whether it holds a worker slot: NULL while its
attempt is in flight (or recovered), set (to when it stopped holding one) while it waits in a
batch behind the attempt in flight or, while its tenant's slots are counted, has succeeded
there and waits for its record (``run_start``). A batch thus holds one slot, like a single
run, and the tenant cap counts slots, not claimed runs.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Count, DateTimeField, DurationField, ExpressionWrapper, F, Q, Value, When
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Now
from django.utils import timezone

from actions import queries
from actions.bundle import ActionBundle, ActionSpec, RetryPolicy, iter_specs, parse_bundle
from actions.errors import ParameterError
from actions.models import ActionAttempt, ActionRun, AttemptOutcome, RunStatus
from actions.queries import AttemptRecord
from actions.services import runs_publish
from timers import metrics
from timers.models import Tenant
from timers.services import timers_append_events
from timers.ticks import this_process

log = logging.getLogger(__name__)

OUTPUT_EXCERPT_CAP = 4 * 1024
ERROR_CAP = 2000
WORKER_LOST = "worker lost: the lease expired before the attempt finished"
# How much later a run held back by its tenant's action concurrency cap is tried again (this,
# shortened by up to THROTTLE_JITTER so held runs of one tenant do not all come back at once).
THROTTLE_DELAY = timedelta(seconds=1)
THROTTLE_JITTER = 0.5
# How long one process trusts its answer to "does another tenant have runs waiting?" (the
# cap applies only then): at most this much later a flooding tenant starts to yield slots,
# and the question costs one query per tenant and process this often, not one per claim.
WAITING_TTL = 0.5


@dataclass(frozen=True)
class Claim:
    """A run this worker holds for attempt ``number`` (``attempt_id`` None: the lost attempt
    of a dead worker was the last one allowed, so the run concludes without a new attempt)."""

    run: ActionRun
    number: int
    attempt_id: int | None
    bundle: ActionBundle
    spec: ActionSpec | None


@dataclass(frozen=True)
class Outcome:
    """What one attempt did, whatever the kind."""

    succeeded: bool
    permanent: bool = False
    error: str = ""
    summary: str = ""
    retry_after: float | None = None
    http_status: int | None = None
    exit_code: int | None = None
    output: str = ""


@dataclass(frozen=True)
class Finished:
    """An attempt that ended, as ``runs_conclude`` takes it."""

    claim: Claim
    outcome: Outcome
    seconds: float


def lease_end() -> ExpressionWrapper[CombinedExpression]:
    """The one lease expression: the database's now() plus MINOOTS_ACTION_LEASE."""
    return ExpressionWrapper(
        Now() + Value(settings.MINOOTS_ACTION_LEASE, output_field=DurationField()), output_field=DateTimeField()
    )


def _claimable() -> Q:
    # A lost attempt of a cancelled timer's run is not attempted again (``runs_cancel_lost``).
    return Q(status=RunStatus.PENDING, next_attempt_at__lte=Now()) | (
        Q(status=RunStatus.RUNNING, lease_expires_at__lt=Now()) & ~Q(timer__status="cancelled")
    )


def spec_for(bundle: ActionBundle, action_id: str) -> ActionSpec | None:
    return next((spec for _, spec in iter_specs(bundle) if spec.id == action_id), None)


def excerpt(text: str, cap: int = OUTPUT_EXCERPT_CAP) -> str:
    """At most ``cap`` bytes of UTF-8, cut on a character boundary."""
    raw = text.encode()
    if len(raw) <= cap:
        return text
    return raw[: cap - 12].decode(errors="ignore") + "\n[truncated]"


def _stored_bundle(raw: Any) -> ActionBundle:
    """The bundle of a claimed run's timer. It was valid when the runs were created (the fire
    step fails a timer whose bundle is not); a row edited by hand since reads as empty."""
    try:
        return parse_bundle(raw)
    except ParameterError:
        return ActionBundle(actions=())


# --- claim (and lease recovery) -------------------------------------------------------------


def runs_claim(*, run_ids: Sequence[UUID]) -> list[Claim]:
    """Claim the claimable runs of ``run_ids``, in that order; the others (claimed elsewhere,
    not yet due, finished, unknown) are skipped, so a duplicate or early message is a no-op.

    The attempt rows are written in the claim's transaction, so an attempt whose worker dies
    stays visible, and the next claim closes it as a transient failure.

    The first run claimed holds a worker slot at once (``next_attempt_at`` NULL); the others
    wait in the caller's batch, holding none, until ``run_start`` (see the module docstring).

    Per-tenant cap (``MINOOTS_TENANT_ACTION_CONCURRENCY``, 0 = none): see ``_within_tenant_cap``;
    a pending run held back by it stays ``pending``, due a moment later, and is skipped here
    like an early one.
    """
    order = {run_id: i for i, run_id in enumerate(run_ids)}
    with transaction.atomic():
        if queries.is_postgres():
            candidates = queries.claim_candidates(run_ids)
        else:
            candidates = list(
                ActionRun.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(Q(pk__in=run_ids) & _claimable())
                .values_list("pk", "status", "timer__tenant_id")
            )
        candidates.sort(key=lambda c: order[c[0]])
        ids = _within_tenant_cap(candidates)
        if not ids:
            return []
        now = timezone.now()
        opened: dict[UUID, int] = {}
        if queries.is_postgres():
            marked = queries.runs_mark_running(
                ids, worker=this_process() or "", lease=settings.MINOOTS_ACTION_LEASE, lost_error=WORKER_LOST, at=now
            )
            runs = sorted((m.run for m in marked), key=lambda r: order[r.pk])
            lost = {m.run.pk: m.last_lost for m in marked if m.last_lost}
            opened = {m.run.pk: m.attempt_id for m in marked}
        else:
            ActionRun.objects.filter(pk__in=ids).update(
                status=RunStatus.RUNNING,
                attempts=F("attempts") + 1,
                lease_expires_at=lease_end(),
                worker=this_process() or "",
                next_attempt_at=None if len(ids) == 1 else Case(When(pk=ids[0], then=None), default=Now()),
            )
            runs = sorted(ActionRun.objects.select_related("timer").filter(pk__in=ids), key=lambda r: order[r.pk])
            lost = _close_lost_attempts(ids, now=now)
        bundles: dict[UUID, ActionBundle] = {}
        claims: list[Claim] = []
        to_open: list[ActionRun] = []
        for run in runs:
            if run.timer_id not in bundles:
                bundles[run.timer_id] = _stored_bundle(run.timer.action_bundle)
            bundle = bundles[run.timer_id]
            last_lost = lost.get(run.pk, 0)
            if last_lost >= bundle.retry_policy.max_attempts:
                # The lost attempt was the last one allowed: conclude without a new attempt (the
                # row Postgres' claim opened for one goes again).
                ActionRun.objects.filter(pk=run.pk).update(attempts=last_lost)
                if run.pk in opened:
                    ActionAttempt.objects.filter(pk=opened.pop(run.pk)).delete()
                run.attempts = last_lost
                claims.append(
                    Claim(
                        run=run, number=last_lost, attempt_id=None, bundle=bundle, spec=spec_for(bundle, run.action_id)
                    )
                )
                continue
            to_open.append(run)
        if not queries.is_postgres():
            new_attempts = [ActionAttempt(run=run, number=run.attempts, started_at=now) for run in to_open]
            opened = {a.run_id: a.pk for a in ActionAttempt.objects.bulk_create(new_attempts)}
        for run in to_open:
            bundle = bundles[run.timer_id]
            claims.append(
                Claim(
                    run=run,
                    number=run.attempts,
                    attempt_id=opened[run.pk],
                    bundle=bundle,
                    spec=spec_for(bundle, run.action_id),
                )
            )
    claims.sort(key=lambda c: order[c.run.pk])
    return claims


def _within_tenant_cap(candidates: Sequence[tuple[UUID, str, str]]) -> list[UUID]:
    """The candidates (run id, status, tenant id; in claim order, row-locked) this claim may
    take under the per-tenant cap; the pending ones beyond it are held back (call in the claim's
    transaction).

    A tenant holds at most ``MINOOTS_TENANT_ACTION_CONCURRENCY`` worker slots (attempts in
    flight: a single run, or a batch however many runs it claimed) *while another tenant has
    runs waiting* (``tenant_others_waiting``), so one tenant's flood or slow actions cannot hold
    every action worker slot; a tenant alone takes every slot there is (the cap conserves work).
    A claim takes one slot, for its first run; its later runs wait in the batch and are checked
    again when their turn comes (``tenant_over_cap``). So every pending run of this claim whose
    tenant already holds its cap is held back, and the others are taken.

    Safe under concurrency: when a tenant is contended, its row is locked (``FOR NO KEY
    UPDATE``, in id order, so claims of one tenant are serialised while its timer inserts, which
    take ``FOR KEY SHARE``, are not blocked; SQLite's IMMEDIATE transactions serialise every
    claim anyway) and its slots are counted after the lock, in one grouped query over the
    partial index of running runs (``actionrun_running_lease``: as many rows as runs claimed).
    Claims that run no cap (0) or whose tenants are alone take neither the lock nor the count.

    A held-back run does not count as an attempt and emits no event (an INFO log line): it
    stays ``pending`` and its ``next_attempt_at`` moves ``THROTTLE_DELAY`` (jittered) ahead on
    the database clock (``_hold``). It is not published here: the caller re-publishes the runs
    it could not claim that are pending and due later (``execution.runs_republish_early``, the
    path of an early message, one batch message per claim), so each consumed message yields at
    most one new one (no message storm however long a tenant stays at its cap), and the run is
    tried again within about a second. Should that publish be lost, the reconciler's
    ``runs_recover`` publishes it once overdue by the repair grace (it has no marker then).
    Lease recovery (a ``running`` run whose worker died) is never held back: it is rare,
    bounded by the attempts that were in progress, and has no ``pending`` state to wait in.
    """
    cap = settings.MINOOTS_TENANT_ACTION_CONCURRENCY
    if cap <= 0 or not candidates:
        return [run_id for run_id, _, _ in candidates]
    waiting_for = {tenant_id for _, status, tenant_id in candidates if status == RunStatus.PENDING}
    contended = sorted(tenant_id for tenant_id in waiting_for if tenant_contended(tenant_id))
    if not contended:
        return [run_id for run_id, _, _ in candidates]
    list(Tenant.objects.select_for_update(no_key=True).filter(pk__in=contended).order_by("pk").values_list("pk"))
    slots = _slots_held(contended)
    taken: list[UUID] = []
    held: dict[str, list[UUID]] = defaultdict(list)
    for run_id, status, tenant_id in candidates:
        if status == RunStatus.PENDING and tenant_id in contended and slots[tenant_id] >= cap:
            held[tenant_id].append(run_id)
            continue
        taken.append(run_id)  # the first one takes the claim's slot; the others wait behind it
    if held:
        delay = _hold([run_id for ids in held.values() for run_id in ids])
        for tenant_id, ids in held.items():
            log.info(
                "tenant at its action concurrency cap: %d runs held back for %.1f s",
                len(ids),
                delay.total_seconds(),
                extra={"event": "action", "tenant_id": tenant_id, "count": len(ids), "cap": cap},
            )
    return taken


def _slots_held(tenants: Sequence[str]) -> defaultdict[str, int]:
    """Worker slots each tenant holds: its ``running`` runs with a live lease and no
    ``next_attempt_at`` (attempts in flight; see the module docstring)."""
    return defaultdict(
        int,
        ActionRun.objects.filter(
            status=RunStatus.RUNNING,
            lease_expires_at__gte=Now(),
            next_attempt_at__isnull=True,
            timer__tenant_id__in=tenants,
        )
        .order_by()
        .values("timer__tenant_id")
        .annotate(n=Count("pk"))
        .values_list("timer__tenant_id", "n"),
    )


def _hold(run_ids: Sequence[UUID]) -> timedelta:
    """Move these pending runs' ``next_attempt_at`` THROTTLE_DELAY (jittered) ahead on the
    database clock; return the delay."""
    delay = THROTTLE_DELAY * random.uniform(1 - THROTTLE_JITTER, 1)
    ActionRun.objects.filter(pk__in=run_ids, status=RunStatus.PENDING).update(
        next_attempt_at=ExpressionWrapper(
            Now() + Value(delay, output_field=DurationField()), output_field=DateTimeField()
        )
    )
    return delay


_waiting: dict[str, tuple[float, bool]] = {}  # tenant id -> (good until, monotonic clock; answer)
_refreshing = threading.Lock()


def tenant_others_waiting(tenant_id: str) -> bool:
    """Whether a tenant other than ``tenant_id`` has a run ``pending`` and due (waiting for a
    worker slot: its message is queued behind others, or was lost). Runs held back by the cap
    are due later, and runs waiting for their timer's concurrency have no ``next_attempt_at``:
    neither counts.

    The answer is kept per process for WAITING_TTL, so a burst costs one query per tenant and
    process that often (it reads the partial index of pending runs, as many rows as are due:
    about 15 ms for 10,000), not one per claim; while one thread refreshes an answer, the
    process's other threads keep using the one it had.
    """
    now = time.monotonic()
    known = _waiting.get(tenant_id)
    if known is not None and known[0] > now:
        return known[1]
    refreshing = _refreshing.acquire(blocking=False)
    if known is not None and not refreshing:
        return known[1]
    try:
        waiting = (
            ActionRun.objects.filter(status=RunStatus.PENDING, next_attempt_at__lte=Now())
            .exclude(timer__tenant_id=tenant_id)
            .exists()
        )
        if len(_waiting) > 10_000:
            _waiting.clear()
        _waiting[tenant_id] = (time.monotonic() + WAITING_TTL, waiting)
    finally:
        if refreshing:
            _refreshing.release()
    return waiting


def tenants_waiting_forget() -> None:
    """Drop this process's remembered answers of ``tenant_others_waiting`` (for tests)."""
    _waiting.clear()


def tenant_contended(tenant_id: str) -> bool:
    """Whether the cap applies to ``tenant_id`` now: there is one, and another tenant waits."""
    return settings.MINOOTS_TENANT_ACTION_CONCURRENCY > 0 and tenant_others_waiting(tenant_id)


def tenant_over_cap(tenant_id: str) -> bool:
    """Whether ``tenant_id`` holds more worker slots than its cap while another tenant waits:
    a batch asks it when its next run's turn comes (after ``run_start``, so its own slot
    counts) and, if so, gives its remaining runs back (``runs_release``) instead of keeping a
    slot another tenant is waiting for. Costs nothing while the tenant is alone (see
    ``tenant_others_waiting``); no lock: a batch that continues keeps the slot it has."""
    if not tenant_contended(tenant_id):
        return False
    return _slots_held([tenant_id])[tenant_id] > settings.MINOOTS_TENANT_ACTION_CONCURRENCY


def _close_lost_attempts(run_ids: Sequence[UUID], *, now: datetime) -> dict[UUID, int]:
    """Close the attempts dead workers left open on these runs; return run -> last lost number."""
    open_attempts = ActionAttempt.objects.filter(run_id__in=run_ids, finished_at__isnull=True)
    lost: dict[UUID, int] = {}
    for run_id, number in open_attempts.values_list("run_id", "number"):
        lost[run_id] = max(number, lost.get(run_id, 0))
    if lost:
        open_attempts.update(finished_at=now, outcome=AttemptOutcome.TRANSIENT, error=WORKER_LOST)
    return lost


def run_start(claim: Claim, *, done: Sequence[Claim] = ()) -> bool:
    """Start the attempt of a run a batch claimed and kept waiting: it takes the batch's worker
    slot (``next_attempt_at`` NULL) with a full lease from now, so the reconciler never hands a
    running run to another worker; ``done``, the batch's earlier runs that succeeded and are not
    recorded yet, give the slot up (``next_attempt_at`` now). One statement. False if this
    worker no longer holds the run (its lease expired while earlier attempts ran).

    A batch passes ``done`` only while its tenants' slots are counted (``tenant_contended``):
    alone, a tenant's unrecorded successes count as slots for at most FLUSH_SECONDS, which no
    claim looks at, and each attempt updates one row, not two.
    """
    mine = Q(pk=claim.run.pk, status=RunStatus.RUNNING, attempts=claim.number)
    if not done:
        return bool(ActionRun.objects.filter(mine).update(lease_expires_at=lease_end(), next_attempt_at=None))
    earlier = Q()
    for other in done:
        earlier |= Q(pk=other.run.pk, status=RunStatus.RUNNING, attempts=other.number)
    updated = ActionRun.objects.filter(mine | earlier).update(
        lease_expires_at=Case(When(pk=claim.run.pk, then=lease_end()), default=F("lease_expires_at")),
        next_attempt_at=Case(When(pk=claim.run.pk, then=None), default=Now()),
    )
    if updated == len(done) + 1:
        return True
    # Fewer rows: one of them was taken over (rare); ask whether it was this one.
    return ActionRun.objects.filter(mine, next_attempt_at__isnull=True).exists()


def runs_release(claims: Sequence[Claim]) -> list[UUID]:
    """running -> pending for runs this worker claimed and never started the attempt of (a
    batch giving its remaining runs back while their tenant is over its cap): the claim is
    undone (``attempts`` back, the open attempt row deleted, no event) and the runs are due
    again THROTTLE_DELAY (jittered) later, like runs the claim held back. Return the runs
    released; the caller re-publishes them (``execution.runs_republish_early``). Claims that
    stand for a lost last attempt (``attempt_id`` None) are not released: conclude them.
    """
    by_number: dict[int, list[UUID]] = defaultdict(list)
    for claim in claims:
        if claim.attempt_id is not None:
            by_number[claim.number].append(claim.run.pk)
    released: list[UUID] = []
    with transaction.atomic():
        for number, run_ids in by_number.items():  # usually one: 1
            mine = list(
                ActionRun.objects.select_for_update(no_key=True)
                .filter(pk__in=run_ids, status=RunStatus.RUNNING, attempts=number)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            if not mine:
                continue
            ActionRun.objects.filter(pk__in=mine).update(
                status=RunStatus.PENDING, attempts=number - 1, lease_expires_at=None
            )
            ActionAttempt.objects.filter(run_id__in=mine, number=number, finished_at__isnull=True).delete()
            released += mine
        if released:
            delay = _hold(released)
            log.info(
                "tenant over its action concurrency cap: a batch gave %d runs back for %.1f s",
                len(released),
                delay.total_seconds(),
                extra={"event": "action", "count": len(released)},
            )
    return released


# --- outcomes ---------------------------------------------------------------------------------


def runs_held(finished: Sequence[Finished]) -> list[Finished]:
    """Lock the runs still held by these claims and return their outcomes (call in a transaction).

    A run whose lease expired and that another worker took over belongs to its new owner: its
    outcome here is stale and dropped.
    """
    current = dict(
        ActionRun.objects.select_for_update(no_key=True)
        .filter(pk__in=[f.claim.run.pk for f in finished], status=RunStatus.RUNNING)
        .order_by("pk")
        .values_list("pk", "attempts")
    )
    held = [f for f in finished if current.get(f.claim.run.pk) == f.claim.number]
    if len(held) != len(finished):
        log.warning("stale action outcomes ignored", extra={"event": "action", "count": len(finished) - len(held)})
    return held


def attempts_record(finished: Sequence[Finished], *, at: datetime) -> None:
    """Close the attempt rows of these outcomes (the recording boundary for every path)."""
    queries.attempts_close([attempt_record(f) for f in finished if f.claim.attempt_id is not None], at=at)


def attempt_record(f: Finished) -> AttemptRecord:
    """How the attempt of ``f`` ended, as stored (its claim has an attempt row)."""
    assert f.claim.attempt_id is not None
    return AttemptRecord(
        attempt_id=f.claim.attempt_id,
        outcome=(
            AttemptOutcome.SUCCEEDED
            if f.outcome.succeeded
            else AttemptOutcome.PERMANENT
            if f.outcome.permanent
            else AttemptOutcome.TRANSIENT
        ),
        http_status=f.outcome.http_status,
        exit_code=f.outcome.exit_code,
        duration_ms=max(0, int(f.seconds * 1000)),
        error=f.outcome.error[:ERROR_CAP],
        output_excerpt=excerpt(f.outcome.output),
    )


def event_data(claim: Claim, outcome: Outcome, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"runId": str(claim.run.pk), "actionId": claim.run.action_id, "attempt": claim.number}
    if outcome.http_status is not None:
        data["httpStatus"] = outcome.http_status
    if outcome.exit_code is not None:
        data["exitCode"] = outcome.exit_code
    if outcome.error:
        data["error"] = outcome.error[:500]
    return {**data, **extra}


def runs_succeed(held: Sequence[Finished], *, at: datetime) -> None:
    """running -> succeeded for held runs (see ``runs_held``); events ``action.succeeded``."""
    groups: dict[tuple[str, int], list[UUID]] = defaultdict(list)
    for f in held:
        groups[(f.outcome.summary[:500], f.claim.number)].append(f.claim.run.pk)
    for (summary, number), run_ids in groups.items():  # usually one: ("HTTP 200", 1)
        ActionRun.objects.filter(pk__in=run_ids, status=RunStatus.RUNNING, attempts=number).update(
            status=RunStatus.SUCCEEDED, finished_at=at, lease_expires_at=None, last_error="", result_summary=summary
        )
    timers_append_events(
        events=[
            (f.claim.run.timer_id, "action.succeeded", event_data(f.claim, f.outcome, summary=f.outcome.summary[:200]))
            for f in held
        ],
        at=at,
    )
    _count_on_commit(held, AttemptOutcome.SUCCEEDED)


def runs_succeed_held(finished: Sequence[Finished], *, at: datetime) -> list[Finished]:
    """running -> succeeded for those of these successful attempts whose run this worker still
    holds, with their ``action.succeeded`` events, and the attempts recorded (as
    ``attempts_record`` does); return those held (stale ones are dropped, as ``runs_held``
    does). Call in a transaction. Postgres: one statement for the batch, its conditional UPDATE
    being the lock and the check (``queries.runs_succeed_with_events``)."""
    if not finished:
        return []
    if not queries.is_postgres() or any(f.claim.attempt_id is None for f in finished):
        held = runs_held(finished)
        attempts_record(finished, at=at)
        runs_succeed(held, at=at)
        return held
    moved = set(
        queries.runs_succeed_with_events(
            [
                queries.Success(
                    run_id=f.claim.run.pk,
                    number=f.claim.number,
                    summary=f.outcome.summary[:500],
                    event=event_data(f.claim, f.outcome, summary=f.outcome.summary[:200]),
                    attempt=attempt_record(f),
                )
                for f in finished
            ],
            at=at,
        )
    )
    held = [f for f in finished if f.claim.run.pk in moved]
    if len(held) != len(finished):
        log.warning("stale action outcomes ignored", extra={"event": "action", "count": len(finished) - len(held)})
    _count_on_commit(held, AttemptOutcome.SUCCEEDED)
    return held


def run_retry(held: Finished, *, retry_at: datetime) -> None:
    """running -> pending, due at ``retry_at``; published with that ETA after commit when it is
    within the arm horizon (later ones are the reconciler's, once due)."""
    claim, outcome = held.claim, held.outcome
    ActionRun.objects.filter(pk=claim.run.pk, status=RunStatus.RUNNING, attempts=claim.number).update(
        status=RunStatus.PENDING, next_attempt_at=retry_at, lease_expires_at=None, last_error=outcome.error[:ERROR_CAP]
    )
    timers_append_events(
        events=[(claim.run.timer_id, "action.retrying", event_data(claim, outcome, nextAttemptAt=retry_at.isoformat()))]
    )
    if retry_at <= timezone.now() + settings.MINOOTS_ARM_HORIZON:
        run_ids = [claim.run.pk]
        transaction.on_commit(lambda: runs_publish(run_ids, eta=retry_at))
    _count_on_commit([held], AttemptOutcome.TRANSIENT)


def run_fail(held: Finished, *, at: datetime) -> None:
    """running -> failed (a permanent failure, or the last attempt allowed)."""
    claim, outcome = held.claim, held.outcome
    ActionRun.objects.filter(pk=claim.run.pk, status=RunStatus.RUNNING, attempts=claim.number).update(
        status=RunStatus.FAILED, finished_at=at, lease_expires_at=None, last_error=outcome.error[:ERROR_CAP]
    )
    timers_append_events(events=[(claim.run.timer_id, "action.failed", event_data(claim, outcome))], at=at)
    # The attempt's own outcome: permanent, or transient with no attempt left.
    _count_on_commit([held], AttemptOutcome.PERMANENT if outcome.permanent else AttemptOutcome.TRANSIENT)


CANCELLED_WITH_TIMER = "cancelled with its timer before it started"


def runs_cancel_for_timer(timer_id: UUID) -> int:
    """pending -> cancelled for every run of a fired timer just cancelled (retries due later,
    runs waiting for a concurrency slot, escalations not started). Running ones are left to
    finish (``run_cancel_retry``); call in the cancel's transaction. Return how many moved."""
    return ActionRun.objects.filter(timer_id=timer_id, status=RunStatus.PENDING).update(
        status=RunStatus.CANCELLED,
        finished_at=timezone.now(),
        next_attempt_at=None,
        lease_expires_at=None,
        last_error=CANCELLED_WITH_TIMER,
    )


def run_cancel_retry(held: Finished, *, at: datetime) -> None:
    """running -> cancelled: the attempt failed and would be retried, but its timer was
    cancelled meanwhile; the attempt is recorded (``attempts_record``), no other follows."""
    claim, outcome = held.claim, held.outcome
    ActionRun.objects.filter(pk=claim.run.pk, status=RunStatus.RUNNING, attempts=claim.number).update(
        status=RunStatus.CANCELLED,
        finished_at=at,
        lease_expires_at=None,
        last_error=f"{outcome.error} (not retried: the timer was cancelled)"[:ERROR_CAP],
    )
    timers_append_events(
        events=[(claim.run.timer_id, "action.cancelled", event_data(claim, outcome, reason="timer cancelled"))], at=at
    )
    _count_on_commit([held], AttemptOutcome.TRANSIENT)


def runs_cancel_lost(*, now: datetime, limit: int) -> int:
    """running -> cancelled for runs of cancelled timers whose worker died mid-attempt (lease
    expired): no new attempt is made for them; the lost attempt is closed. Return how many."""
    with transaction.atomic():
        run_ids = list(
            ActionRun.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(status=RunStatus.RUNNING, lease_expires_at__lt=now, timer__status="cancelled")
            .values_list("pk", flat=True)[:limit]
        )
        if not run_ids:
            return 0
        _close_lost_attempts(run_ids, now=now)
        return ActionRun.objects.filter(pk__in=run_ids, status=RunStatus.RUNNING).update(
            status=RunStatus.CANCELLED,
            finished_at=now,
            lease_expires_at=None,
            last_error=f"{WORKER_LOST} (not retried: the timer was cancelled)",
        )


def _count_on_commit(finished: Sequence[Finished], outcome: AttemptOutcome) -> None:
    """Count the attempts once committed, labelled with the API's attempt outcome words."""
    samples = [(f.claim.run.kind, f.seconds) for f in finished]

    def count() -> None:
        for kind, seconds in samples:
            metrics.action_attempt(kind, outcome.value, seconds)

    if samples:
        transaction.on_commit(count, robust=True)


def retry_policy_allows(policy: RetryPolicy, claim: Claim, outcome: Outcome) -> bool:
    """Whether a failed attempt is followed by another (attempts counted from the run's last
    operator retry, ``retry_base``)."""
    return not outcome.permanent and claim.number - claim.run.retry_base < policy.max_attempts


def runs_end_leases(*, run_ids: Sequence[UUID], at: datetime) -> list[UUID]:
    """End the lease of those of ``run_ids`` still ``running`` (their worker is gone, or could
    not record their outcome): the next claim of each takes it as a lost attempt, recorded so,
    and runs it again under the retry policy. No status changes here. Return the ids."""
    ids = list(
        ActionRun.objects.filter(pk__in=run_ids, status=RunStatus.RUNNING, lease_expires_at__gte=at).values_list(
            "pk", flat=True
        )
    )
    if ids:
        ActionRun.objects.filter(pk__in=ids, status=RunStatus.RUNNING).update(
            lease_expires_at=at - timedelta(microseconds=1)
        )
    return ids


def runs_reopen(*, run_ids: Sequence[UUID], at: datetime) -> list[UUID]:
    """failed -> pending, due at ``at``, for an operator's retry: a new chain of attempts under
    the bundle's retry policy (``retry_base`` = the attempts made so far; their records stay).
    Runs no longer failed are left alone. Return the ids that moved (call in the transaction
    that reopens their timers: ``timers.services.timer_reopen``)."""
    moved = []
    for run_id, attempts in ActionRun.objects.filter(pk__in=run_ids, status=RunStatus.FAILED).values_list(
        "pk", "attempts"
    ):
        if ActionRun.objects.filter(pk=run_id, status=RunStatus.FAILED).update(
            status=RunStatus.PENDING,
            retry_base=attempts,
            next_attempt_at=at,
            finished_at=None,
            lease_expires_at=None,
            last_error="",
        ):
            moved.append(run_id)
    return moved


def runs_import(*, runs: Sequence[ActionRun], attempts: Sequence[ActionAttempt]) -> int:
    """Store action runs exported from an installation as they were there (status, attempts,
    times), with their ``attempts``: the runs of timers ``timers.services.timers_import`` has
    just stored, in the same transaction. Idempotent by id: a run already stored is left as it
    is, with its attempts. Return how many runs were stored. Nothing is published: the
    reconciler recovers a pending run that is due and a running one whose lease passed."""
    with transaction.atomic():
        existing = set(ActionRun.objects.filter(pk__in=[r.pk for r in runs]).values_list("pk", flat=True))
        # Escalations refer to the run they escalate from: parents first.
        new = sorted((r for r in runs if r.pk not in existing), key=lambda r: r.escalation_level)
        # created_at is auto_now_add, which bulk_create overwrites with now: set it back after.
        created = {r.pk: r.created_at for r in new}
        ActionRun.objects.bulk_create(new)
        if new:
            ActionRun.objects.filter(pk__in=list(created)).update(
                created_at=Case(*[When(pk=pk, then=Value(at)) for pk, at in created.items()])
            )
        stored = {r.pk for r in new}
        ActionAttempt.objects.bulk_create([a for a in attempts if a.run_id in stored])
    return len(new)
