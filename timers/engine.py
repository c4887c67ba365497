"""The scheduling steps: the tick (fire), repair, and the reconcile pass that drives them.

Each step is one unit of work a test can call directly. The transitions they cause are the
services' (``timers_arm``, ``timers_fire``), each a conditional UPDATE (``FOR UPDATE SKIP
LOCKED`` on Postgres; SQLite serialises writers with IMMEDIATE transactions), so duplicates,
races and concurrent reconcilers never double-arm or double-fire.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from timers import metrics, ports, queries, ticks
from timers.models import Timer, TimerStatus
from timers.services import timers_arm, timers_fire

log = logging.getLogger(__name__)

# How many claim batches one fire_due task runs before handing over to a fresh task.
MAX_BATCHES_PER_TICK = 20
# How long one reconcile pass may keep arming a backlog (the next pass continues).
ARM_BUDGET_SECONDS = 3.0
# How long a tick may wait in its task for its bucket's later timers, in MINOOTS_TICKs from
# when it started (its bucket is one tick long; the rest is slack for a busy worker), and the
# shortest sleep between two looks (a timer the worker's clock says is due but the database's
# does not yet).
IN_BUCKET_WAIT_TICKS = 3
MIN_WAIT_SECONDS = 0.001


def _next_armed_fire_at(*, bucket: int) -> datetime | None:
    """The earliest armed timer of ``bucket`` (overdue ones of other buckets have their own
    ticks, or the reconciler's repair)."""
    found = queries.first_armed_fire_ats(start=ticks.next_bucket_start(bucket - 1), end=ticks.next_bucket_start(bucket))
    return found[0] if found else None


def fire_due(*, bucket: int | None) -> int:
    """The tick: claim every due timer in bounded batches, then the bucket's later timers.

    A bucket's tick is published for the bucket's first instant (``ticks.tick_eta``), so it
    runs before any of its timers is due. Its later timers are then at most one bucket away:
    the task sleeps until each is due and claims it, rather than publishing itself again (a
    broker round trip and the worker's ETA timer on top: a timer 4 ms after the bucket's first
    one fired a whole MINOOTS_TICK late). A timer still not claimable once that wait is over
    (the worker's clock ahead of the database's, or another worker's claim holding it) gets a
    tick again, no sooner than one MINOOTS_TICK from now: the wait is bounded whatever the
    clocks say.

    A tick runs at its bucket's first instant, mostly before any of its timers is due: it first
    looks at the bucket's first two armed timers and sleeps until the first is due, instead of
    claiming nothing first. When that first one was the bucket's only armed timer, the claim
    that took it goes straight on to forget-then-look. A tick for a bucket of one timer is then
    a look, a claim and a look (it used to be two claims and three looks): the statements of
    a steady stream of timers, one bucket each.
    """
    total = 0
    tick = settings.MINOOTS_TICK.total_seconds()
    waited_until = time.monotonic() + IN_BUCKET_WAIT_TICKS * tick
    forgotten = False
    alone = False  # the bucket's earliest armed timer was its only one, when this tick looked
    if bucket is not None:
        # By the database's clock, which the claim uses: a worker clock behind it must not
        # delay the bucket's first timer (the waits after a claim have the claim's answer).
        first, db_now = queries.first_armed_fire_ats_and_now(
            start=ticks.next_bucket_start(bucket - 1), end=ticks.next_bucket_start(bucket), limit=2
        )
        alone = len(first) == 1
        wait = (first[0] - db_now).total_seconds() if first else 0.0
        if 0 < wait and time.monotonic() + wait < waited_until:
            time.sleep(max(wait, MIN_WAIT_SECONDS))
    while True:
        claimed, handed_over = _claim_due_batches(bucket=bucket)
        total += claimed
        if handed_over or bucket is None:
            return total
        # Forgetting while a timer is left is still right, only costlier: a create in the bucket
        # meanwhile publishes a tick of its own.
        upcoming = None if alone and claimed else _next_armed_fire_at(bucket=bucket)
        alone = False
        if upcoming is None and not forgotten:
            # Forget first, then look: a timer created in this bucket meanwhile either sees no
            # marker and publishes its own tick, or is committed and found here.
            ticks.forget_tick(bucket)
            forgotten = True
            upcoming = _next_armed_fire_at(bucket=bucket)
        if upcoming is None:
            return total
        now = timezone.now()
        wait = (upcoming - now).total_seconds()
        if time.monotonic() + max(wait, 0.0) < waited_until:
            time.sleep(max(wait, MIN_WAIT_SECONDS))
            continue
        # The tick ran early (clock skew, or a later timer of the bucket still locked).
        ticks.republish_tick(bucket=bucket, eta=max(upcoming, now + settings.MINOOTS_TICK))
        return total


def _claim_due_batches(*, bucket: int | None) -> tuple[int, bool]:
    """Claim what is due in up to MAX_BATCHES_PER_TICK batches: (how many, handed over).
    Handed over: more was due than one task should hold on to, a fresh tick continues."""
    batch = settings.MINOOTS_CLAIM_BATCH
    total = 0
    for n in range(MAX_BATCHES_PER_TICK):
        claimed = timers_fire(limit=batch)
        total += len(claimed)
        if len(claimed) < batch:
            return total, False
        if n == 0:
            # A full batch means a burst: enlist another worker slot to claim beside this one
            # (SKIP LOCKED keeps them apart). Each helper does the same, so the fan-out follows
            # the backlog and stops when it is drained.
            ticks.publish_tick(bucket=None, eta=None)
    ticks.publish_tick(bucket=bucket, eta=None)
    return total, True


# --- repair --------------------------------------------------------------------------------


def ticks_refresh(*, now: datetime, horizon_end: datetime, limit: int) -> int:
    """Re-publish the ticks that are gone for armed timers within the horizon. Return how many.

    Gone: the marker vanished with the message (Redis flushed or restarted), the worker holding
    the tick was killed (its message waits out ``visibility_timeout`` in Redis's unacked set),
    or the publisher died between marking and publishing (``ticks.ticks_restore``). The cost is
    two cache reads per pass whatever the number of buckets, plus one tick per bucket found gone.
    """
    fire_ats = (
        Timer.objects.filter(status=TimerStatus.ARMED, fire_at__lte=horizon_end)
        .order_by("fire_at")
        .values_list("fire_at", flat=True)[:limit]
    )
    firsts: dict[int, datetime] = {}
    for fire_at in fire_ats:
        firsts.setdefault(ticks.bucket_of(fire_at), fire_at)
    return ticks.ticks_restore(firsts, now=now)


def timers_repair_overdue(*, now: datetime) -> int:
    """Armed timers overdue by more than the grace mean a lost tick: publish one now."""
    overdue = Timer.objects.filter(status=TimerStatus.ARMED, fire_at__lt=now - settings.MINOOTS_REPAIR_GRACE).exists()
    if overdue and ticks.publish_tick(bucket=None, eta=None):
        return 1
    return 0


# --- reconcile ------------------------------------------------------------------------------


@dataclass
class ReconcileReport:
    armed: int = 0
    ticks_republished: int = 0
    repaired: int = 0
    runs_recovered: int = 0
    duration_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "armed": self.armed,
            "ticksRepublished": self.ticks_republished,
            "repaired": self.repaired,
            "runsRecovered": self.runs_recovered,
            "durationMs": round(self.duration_ms, 2),
        }


def reconcile(*, now: datetime | None = None) -> ReconcileReport:
    """One reconciler pass: arm, refresh lost ticks, repair overdue timers, recover action runs."""
    started = time.perf_counter()
    now = now or timezone.now()
    horizon_end = now + settings.MINOOTS_ARM_HORIZON
    budget = settings.MINOOTS_RECONCILE_BATCH
    report = ReconcileReport()
    # A backlog (a million timers due at midnight, or beat down for a while) is armed in
    # batches until it is done or the pass has used its time budget.
    deadline = time.perf_counter() + ARM_BUDGET_SECONDS
    while True:
        armed = timers_arm(horizon_end=horizon_end, limit=budget)
        report.armed += armed
        if armed < budget or time.perf_counter() > deadline:
            break
    report.ticks_republished = ticks_refresh(now=now, horizon_end=horizon_end, limit=budget)
    report.repaired = timers_repair_overdue(now=now)
    report.runs_recovered = ports.recover_handler()(now, budget)
    report.duration_ms = (time.perf_counter() - started) * 1000
    metrics.RECONCILE_RUNS.inc()
    for kind, count in (
        ("armed", report.armed),
        ("tick_republished", report.ticks_republished),
        ("repaired", report.repaired),
        ("run_recovered", report.runs_recovered),
    ):
        if count:
            metrics.RECONCILE_ACTIONS.labels(kind=kind).inc(count)
    # A pass that changed nothing is DEBUG: `make run` at INFO stays quiet between real events.
    changed = report.armed or report.ticks_republished or report.repaired or report.runs_recovered
    log.log(logging.INFO if changed else logging.DEBUG, "reconcile %s", report.as_dict(), extra={"event": "reconcile"})
    return report
