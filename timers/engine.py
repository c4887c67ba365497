"""The scheduling steps: arm, claim (fire), repair and the reconcile pass that drives them.

Each step is one unit of work a test can call directly. Postgres is the truth: every step is
a conditional UPDATE (``FOR UPDATE SKIP LOCKED`` on Postgres; SQLite serialises writers with
IMMEDIATE transactions), so duplicates, races and concurrent reconcilers never double-arm
or double-fire.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from timers import metrics, ticks
from timers.models import Timer, TimerEvent, TimerStatus

log = logging.getLogger(__name__)

# How many claim batches one fire_due task runs before handing over to a fresh task.
MAX_BATCHES_PER_TICK = 20
# How long one reconcile pass may keep arming a backlog (the next pass continues).
ARM_BUDGET_SECONDS = 3.0


@dataclass(frozen=True)
class ClaimedTimer:
    id: UUID
    tenant_id: str
    fired_at: datetime
    lateness_ms: int
    state_version: int
    action_bundle: Any


def _pg() -> bool:
    return connection.vendor == "postgresql"


def _lock_clause() -> str:
    return "FOR UPDATE SKIP LOCKED" if _pg() else ""


def _db_param(moment: datetime) -> Any:
    """A datetime in the form the backend stores (SQLite keeps naive UTC text)."""
    return connection.ops.adapt_datetimefield_value(moment)


def _as_uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if timezone.is_aware(value) else timezone.make_aware(value, UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def _as_json(value: Any) -> Any:
    import json

    return json.loads(value) if isinstance(value, str) else value


# --- claim ---------------------------------------------------------------------------------


_HAS_ACTIONS = (
    "(t.action_bundle IS NOT NULL AND jsonb_typeof(t.action_bundle -> 'actions') = 'array'"
    " AND jsonb_array_length(t.action_bundle -> 'actions') > 0)"
)


def _claim_pg(limit: int) -> list[tuple[ClaimedTimer, bool]]:
    """One statement per batch: claim, settle the timers without actions, and write the
    ``fired`` (and ``settled``) events, without a round trip of the rows through Python."""
    table = Timer._meta.db_table
    events = TimerEvent._meta.db_table
    with connection.cursor() as cur:
        cur.execute(
            f"""
            WITH due AS (
                SELECT id FROM {table}
                 WHERE status = 'armed' AND fire_at <= statement_timestamp()
                 ORDER BY fire_at LIMIT %s FOR UPDATE SKIP LOCKED
            ), claimed AS (
                UPDATE {table} t
                   SET status = CASE WHEN {_HAS_ACTIONS} THEN 'fired' ELSE 'settled' END,
                       fired_at = statement_timestamp(),
                       settled_at = CASE WHEN {_HAS_ACTIONS} THEN NULL ELSE statement_timestamp() END,
                       state_version = t.state_version + CASE WHEN {_HAS_ACTIONS} THEN 1 ELSE 2 END,
                       lateness_ms = GREATEST(0, FLOOR(EXTRACT(EPOCH FROM (statement_timestamp() - t.fire_at)) * 1000))::bigint
                  FROM due
                 WHERE t.id = due.id AND t.status = 'armed'
                RETURNING t.id, t.tenant_id, t.fired_at, t.lateness_ms, t.state_version, t.status,
                          CASE WHEN t.status = 'fired' THEN t.action_bundle END AS action_bundle
            ), written AS (
                INSERT INTO {events} (timer_id, kind, occurred_at, state_version, data)
                SELECT id, 'fired', fired_at,
                       CASE WHEN status = 'settled' THEN state_version - 1 ELSE state_version END,
                       jsonb_build_object('latenessMs', lateness_ms)
                  FROM claimed
                UNION ALL
                SELECT id, 'settled', fired_at, state_version, '{{}}'::jsonb FROM claimed WHERE status = 'settled'
            )
            SELECT id, tenant_id, fired_at, lateness_ms, state_version, status, action_bundle FROM claimed
            """,
            [limit],
        )
        rows = cur.fetchall()
    return [
        (
            ClaimedTimer(
                id=_as_uuid(r[0]), tenant_id=r[1], fired_at=_as_datetime(r[2]), lateness_ms=int(r[3]),
                state_version=int(r[4]) - (1 if r[5] == "settled" else 0), action_bundle=_as_json(r[6]),
            ),
            r[5] == "settled",
        )
        for r in rows
    ]


def _claim_sqlite(limit: int) -> list[tuple[ClaimedTimer, bool]]:
    """The same steps in plain statements (SQLite serialises writers, so no locking clause)."""
    table = Timer._meta.db_table
    now = _db_param(timezone.now())
    with connection.cursor() as cur:
        cur.execute(
            f"""
            UPDATE {table}
               SET status = 'fired', fired_at = %s, state_version = state_version + 1,
                   lateness_ms = MAX(0, CAST((julianday(%s) - julianday(fire_at)) * 86400000 AS INTEGER))
             WHERE id IN (SELECT id FROM {table}
                           WHERE status = 'armed' AND fire_at <= %s ORDER BY fire_at LIMIT %s)
            RETURNING id, tenant_id, fired_at, lateness_ms, state_version, action_bundle
            """,
            [now, now, now, limit],
        )
        rows = cur.fetchall()
    claimed = [
        ClaimedTimer(
            id=_as_uuid(r[0]), tenant_id=r[1], fired_at=_as_datetime(r[2]), lateness_ms=int(r[3]),
            state_version=int(r[4]), action_bundle=_as_json(r[5]),
        )
        for r in rows
    ]
    TimerEvent.objects.bulk_create(
        [
            TimerEvent(
                timer_id=c.id, kind="fired", occurred_at=c.fired_at, state_version=c.state_version,
                data={"latenessMs": c.lateness_ms},
            )
            for c in claimed
        ]
    )
    without = [c for c in claimed if not _has_actions(c.action_bundle)]
    if without:
        Timer.objects.filter(id__in=[c.id for c in without], status=TimerStatus.FIRED).update(
            status=TimerStatus.SETTLED, settled_at=F("fired_at"), state_version=F("state_version") + 1
        )
        TimerEvent.objects.bulk_create(
            [
                TimerEvent(timer_id=c.id, kind="settled", occurred_at=c.fired_at, state_version=c.state_version + 1)
                for c in without
            ]
        )
    return [(c, not _has_actions(c.action_bundle)) for c in claimed]


def _has_actions(bundle: Any) -> bool:
    return isinstance(bundle, dict) and isinstance(bundle.get("actions"), list) and bool(bundle["actions"])


def timers_claim_due(*, limit: int | None = None) -> list[ClaimedTimer]:
    """Claim up to ``limit`` due armed timers: armed -> fired, exactly once, and hand them on.

    Timers without actions settle at once (events ``fired`` then ``settled``); the others get
    their action runs, published after commit.
    """
    from actions import services as action_services

    limit = limit or settings.MINOOTS_CLAIM_BATCH
    with transaction.atomic():
        results = _claim_pg(limit) if _pg() else _claim_sqlite(limit)
        if not results:
            return []
        with_actions = [c for c, settled in results if not settled]
        run_ids = action_services.runs_create_for_fired(timers=with_actions)
        if run_ids:
            transaction.on_commit(lambda: action_services.runs_publish_batches(run_ids))
    for c, settled in results:
        metrics.timer_transition(c.tenant_id, "fired")
        metrics.FIRE_LATENESS.observe(c.lateness_ms / 1000)
        if settled:
            metrics.timer_transition(c.tenant_id, "settled")
    return [c for c, _ in results]


def _next_armed_fire_at(*, bucket: int) -> datetime | None:
    """The earliest armed timer of ``bucket`` (overdue ones of other buckets have their own
    ticks, or the reconciler's repair)."""
    return (
        Timer.objects.filter(
            status=TimerStatus.ARMED,
            fire_at__gte=ticks.next_bucket_start(bucket - 1),
            fire_at__lt=ticks.next_bucket_start(bucket),
        )
        .order_by("fire_at")
        .values_list("fire_at", flat=True)
        .first()
    )


def fire_due(*, bucket: int | None) -> int:
    """The tick: claim every due timer in bounded batches; re-publish for the bucket's later timers."""
    batch = settings.MINOOTS_CLAIM_BATCH
    total = 0
    for n in range(MAX_BATCHES_PER_TICK):
        claimed = timers_claim_due(limit=batch)
        total += len(claimed)
        if len(claimed) < batch:
            break
        if n == 0:
            # A full batch means a burst: enlist another worker slot to claim beside this one
            # (SKIP LOCKED keeps them apart). Each helper does the same, so the fan-out follows
            # the backlog and stops when it is drained.
            ticks.publish_tick(bucket=None, eta=None)
    else:
        # More is due than one task should hold on to: continue in a fresh task.
        ticks.publish_tick(bucket=bucket, eta=None)
        return total
    if bucket is not None:
        # Forget first, then look: a timer created in this bucket meanwhile either sees no
        # marker and publishes its own tick, or is committed and found here.
        ticks.forget_tick(bucket)
        upcoming = _next_armed_fire_at(bucket=bucket)
        if upcoming is not None:
            # The tick ran early (clock skew, or a later timer of the same bucket).
            now = timezone.now()
            ticks.republish_tick(bucket=bucket, eta=max(upcoming, now + settings.MINOOTS_TICK))
    return total


# --- arm -----------------------------------------------------------------------------------


def timers_arm_due(*, horizon_end: datetime, limit: int) -> int:
    """scheduled -> armed for timers due before ``horizon_end``; publish one tick per bucket."""
    table = Timer._meta.db_table
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute(
                f"""
                UPDATE {table} SET status = 'armed', state_version = state_version + 1
                 WHERE id IN (SELECT id FROM {table}
                               WHERE status = 'scheduled' AND fire_at <= %s
                               ORDER BY fire_at LIMIT %s {_lock_clause()})
                RETURNING id, fire_at, state_version
                """,
                [_db_param(horizon_end), limit],
            )
            rows = cur.fetchall()
        if not rows:
            return 0
        now = timezone.now()
        TimerEvent.objects.bulk_create(
            [
                TimerEvent(timer_id=_as_uuid(r[0]), kind="armed", occurred_at=now, state_version=int(r[2]), data={})
                for r in rows
            ]
        )
        firsts: dict[int, datetime] = {}
        for r in rows:
            fire_at = _as_datetime(r[1])
            b = ticks.bucket_of(fire_at)
            if b not in firsts or fire_at < firsts[b]:
                firsts[b] = fire_at
        transaction.on_commit(lambda: ticks.ensure_ticks(list(firsts.values())))
    return len(rows)


# --- repair --------------------------------------------------------------------------------


def ticks_refresh(*, horizon_end: datetime, limit: int) -> int:
    """Re-publish ticks whose markers vanished (Redis flushed or restarted). Return how many.

    The marker and the message live in the same Redis, so a lost marker means a lost tick.
    """
    fire_ats = (
        Timer.objects.filter(status=TimerStatus.ARMED, fire_at__lte=horizon_end)
        .order_by("fire_at")
        .values_list("fire_at", flat=True)[:limit]
    )
    firsts: dict[int, datetime] = {}
    for fire_at in fire_ats:
        firsts.setdefault(ticks.bucket_of(fire_at), fire_at)
    return ticks.ensure_ticks(list(firsts.values()))


def timers_repair_overdue(*, now: datetime) -> int:
    """Armed timers overdue by more than the grace mean a lost tick: publish one now."""
    overdue = Timer.objects.filter(
        status=TimerStatus.ARMED, fire_at__lt=now - settings.MINOOTS_REPAIR_GRACE
    ).exists()
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
    extra: dict[str, int] = field(default_factory=dict)

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
    from actions import services as action_services

    started = time.perf_counter()
    now = now or timezone.now()
    horizon_end = now + settings.MINOOTS_ARM_HORIZON
    budget = settings.MINOOTS_RECONCILE_BATCH
    report = ReconcileReport()
    # A backlog (a million timers due at midnight, or beat down for a while) is armed in
    # batches until it is done or the pass has used its time budget.
    deadline = time.perf_counter() + ARM_BUDGET_SECONDS
    while True:
        armed = timers_arm_due(horizon_end=horizon_end, limit=budget)
        report.armed += armed
        if armed < budget or time.perf_counter() > deadline:
            break
    report.ticks_republished = ticks_refresh(horizon_end=horizon_end, limit=budget)
    report.repaired = timers_repair_overdue(now=now)
    report.runs_recovered = action_services.runs_recover(now=now, limit=budget)
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
    if report.armed or report.ticks_republished or report.repaired or report.runs_recovered:
        log.info("reconcile %s", report.as_dict(), extra={"event": "reconcile"})
    return report
