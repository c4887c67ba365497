"""Writes on timers. Each status change is one function here: a conditional UPDATE, its event
row and its metric (see the docstring of ``timers.models``). Bulk forms serve the engine.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from timers import metrics, ports, queries, ticks
from timers.allowlist import bundle_refusal
from timers.batch_insert import NewTimers
from timers.limits import oversized_fields
from timers.models import PENDING_STATUSES, Tenant, Timer, TimerEvent, TimerStatus, has_actions
from timers.queries import EventRow
from timers.quotas import QuotaExhausted, quota_admit, quota_check_and_count

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """A refusal a client can act on; the API maps it to ``status_code``."""

    status_code = 400

    def __init__(self, message: str, *, details: Any = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.extra = extra or {}


class ValidationFailed(ServiceError):
    """An input value a rule refuses, naming the field as the API spells it (``fireAt``).

    Shaped like a serializer's field error, so the API answers both alike: message
    ``"<field>: <reason>"``, details ``{<field>: [<reason>]}``.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}", details={field: [reason]})
        self.field = field
        self.reason = reason


class Conflict(ServiceError):
    status_code = 409


class QuotaExceeded(ServiceError):
    status_code = 429


EXACTLY_ONE_WHEN = "give exactly one of 'duration' or 'fireAt'"


@dataclass(frozen=True, kw_only=True)
class TimerSpec:
    """What to create. When it fires is ``duration`` (from creation) or ``fire_at`` (an aware
    instant), exactly one; ``timer_create`` applies the rules on them and computes the other."""

    name: str
    duration: timedelta | None = None
    fire_at: datetime | None = None
    requested_by: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    action_bundle: dict[str, Any] | None = None
    agent_binding: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if (self.duration is None) == (self.fire_at is None):
            raise ValidationFailed("duration", EXACTLY_ONE_WHEN)
        if self.fire_at is not None and timezone.is_naive(self.fire_at):
            raise ValueError("TimerSpec.fire_at must be an aware datetime")


def request_fingerprint(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _event(timer_id: UUID, kind: str, version: int, at: datetime, **data: Any) -> TimerEvent:
    return TimerEvent(timer_id=timer_id, kind=kind, occurred_at=at, state_version=version, data=data)


def _schedule(spec: TimerSpec, now: datetime, *, refuse_past: bool) -> tuple[datetime, int]:
    """``(fire_at, duration_ms)`` of a timer created at ``now``; ValidationFailed naming the
    field otherwise. ``created_at + duration_ms == fire_at`` to the millisecond."""
    horizon: timedelta = settings.MINOOTS_MAX_HORIZON
    if spec.duration is not None:
        field_name, delta = "duration", spec.duration
        if delta <= timedelta(0):
            raise ValidationFailed(field_name, "must be positive")
        try:
            fire_at = now + delta
        except OverflowError as exc:  # beyond year 9999
            raise ValidationFailed(field_name, "is too large") from exc
    else:
        assert spec.fire_at is not None  # TimerSpec holds exactly one
        field_name, fire_at = "fireAt", spec.fire_at
        if fire_at <= now:
            if refuse_past:
                raise ValidationFailed(field_name, "must be in the future")
            fire_at = now
        delta = fire_at - now
    if delta > horizon:
        raise ValidationFailed(field_name, f"must be at most {horizon.days} days ahead (MINOOTS_MAX_HORIZON)")
    # Integer division of timedeltas is exact; total_seconds() * 1000 is a float and turns
    # 1001 ms into 1000.
    return fire_at, delta // timedelta(milliseconds=1)


def _quota_exceeded(tenant: Tenant, limit_type: str) -> QuotaExceeded:
    if limit_type == "burst":
        message = f"Tenant '{tenant.id}' has {tenant.max_active_timers} active timers, its limit"
    else:
        message = f"Tenant '{tenant.id}' created {tenant.max_creates_per_day} timers today (UTC), its daily limit"
    return QuotaExceeded(message, extra={"limitType": limit_type})


def _check_quotas(tenant: Tenant, now: datetime) -> None:
    try:
        quota_check_and_count(tenant=tenant, now=now)
    except QuotaExhausted as exc:
        raise _quota_exceeded(tenant, exc.limit_type) from exc


def _check_rules(tenant: Tenant, spec: TimerSpec, now: datetime, *, refuse_past: bool) -> tuple[datetime, int]:
    """``timer_create``'s rules on one spec: ``(fire_at, duration_ms)``, or ValidationFailed."""
    fire_at, duration_ms = _schedule(spec, now, refuse_past=refuse_past)
    for field_name, reason in oversized_fields(
        metadata=spec.metadata, action_bundle=spec.action_bundle, agent_binding=spec.agent_binding
    ):
        raise ValidationFailed(field_name, reason)
    refused = bundle_refusal(tenant=tenant, action_bundle=spec.action_bundle)
    if refused is not None:
        raise ValidationFailed(*refused)
    return fire_at, duration_ms


def _idempotent_replay(tenant: Tenant, key: str, fingerprint: str, now: datetime) -> Timer | None:
    existing = Timer.objects.filter(tenant=tenant, idempotency_key=key).first()
    if existing is None:
        return None
    if existing.created_at < now - settings.MINOOTS_IDEMPOTENCY_TTL:
        # Expired: free the key so the new request can take it.
        Timer.objects.filter(pk=existing.pk, idempotency_key=key).update(idempotency_key=None)
        return None
    if existing.request_hash != fingerprint:
        raise Conflict(
            "Idempotency-Key was already used with a different request body",
            details={"idempotencyKey": key, "timerId": str(existing.id)},
        )
    return existing


def timer_create(
    *,
    tenant: Tenant,
    spec: TimerSpec,
    idempotency_key: str | None = None,
    fingerprint: str = "",
    refuse_past: bool = False,
    now: datetime | None = None,
) -> tuple[Timer, bool]:
    """Store a timer (armed at once when due within the horizon). Return (timer, created).

    The rules, for every caller: a ``duration`` is positive, a ``fire_at`` is in the future,
    either is at most MINOOTS_MAX_HORIZON ahead; metadata, action bundle and agent binding are
    within their sizes (``timers.limits``); a refusal is a ValidationFailed naming the
    field, and nothing is stored. A ``fire_at`` already past is refused only with
    ``refuse_past`` (the API sets it: a client's past fireAt is an input error, a skewed clock
    or a stale retry); an internal caller computed it from its own clock a moment ago, so it
    means now: the timer is stored due at ``now`` and fires at once.

    ``now`` (default: the current time) is the timer's ``created_at``; ``fire_at`` and
    ``duration_ms`` are computed from it, so ``created_at + duration_ms == fire_at`` holds.
    """
    now = now or timezone.now()
    # Before the replay lookup: a retried request must still pass the rules (as the API did).
    fire_at, duration_ms = _check_rules(tenant, spec, now, refuse_past=refuse_past)
    try:
        with transaction.atomic():
            if idempotency_key:
                replay = _idempotent_replay(tenant, idempotency_key, fingerprint, now)
                if replay is not None:
                    return replay, False
            _check_quotas(tenant, now)
            arm_now = fire_at <= now + settings.MINOOTS_ARM_HORIZON
            rows = NewTimers(tenant_id=tenant.id, created_at=now)
            timer = rows.add(
                name=spec.name,
                armed=arm_now,
                duration_ms=duration_ms,
                fire_at=fire_at,
                requested_by=spec.requested_by,
                metadata=spec.metadata,
                labels=spec.labels,
                action_bundle=spec.action_bundle,
                agent_binding=spec.agent_binding,
                idempotency_key=idempotency_key or None,
                request_hash=fingerprint,
            )
            rows.insert()  # the timer and its created (+ armed) events, one statement on Postgres
            timer.tenant = tenant
            if arm_now:
                transaction.on_commit(lambda: ticks.ensure_tick(fire_at))
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the insert.
        if not idempotency_key:
            raise
        replay = _idempotent_replay(tenant, idempotency_key, fingerprint, now)
        if replay is None:
            raise
        return replay, False
    log.info("timer created", extra={"timer_id": str(timer.id), "tenant": tenant.id, "event": "created"})
    metrics.timer_transition(tenant.id, "created")
    return timer, True


@dataclass(frozen=True, kw_only=True)
class BatchItem:
    """One create of ``timers_create_batch``: what ``timer_create`` takes per timer."""

    spec: TimerSpec
    idempotency_key: str | None = None
    fingerprint: str = ""


@dataclass(frozen=True)
class BatchOutcome:
    """What became of one ``BatchItem``: its timer (``created`` False for an idempotent
    replay), or the refusal (ValidationFailed, Conflict, QuotaExceeded) that stored nothing."""

    timer: Timer | None = None
    created: bool = False
    error: ServiceError | None = None


@dataclass
class _Pending:
    index: int
    item: BatchItem
    fire_at: datetime
    duration_ms: int


def timers_create_batch(
    *,
    tenant: Tenant,
    items: Sequence[BatchItem],
    refuse_past: bool = False,
    now: datetime | None = None,
) -> list[BatchOutcome]:
    """``timer_create`` for many timers at once: one outcome per item, in order.

    Each item gets exactly what ``timer_create`` would answer it, as if the items were created
    one after the other: the same rules (a refusal is that item's ValidationFailed), the same
    idempotency (a key already stored with the same fingerprint replays its timer, with another
    a Conflict; a key repeated within the batch is the first item's replay, or its Conflict),
    the same quotas (the first items that fit are created, the later ones are QuotaExceeded).
    All in one transaction: the quotas counted once for the batch, the timers and their events
    inserted in bulk, and after commit one tick per bucket (``ticks.ensure_ticks``) and the
    ``created`` metric. ``now`` is every timer's ``created_at``.
    """
    now = now or timezone.now()
    outcomes: list[BatchOutcome | None] = [None] * len(items)
    valid: list[_Pending] = []
    for index, item in enumerate(items):
        try:
            fire_at, duration_ms = _check_rules(tenant, item.spec, now, refuse_past=refuse_past)
        except ValidationFailed as exc:
            outcomes[index] = BatchOutcome(error=exc)
            continue
        valid.append(_Pending(index, item, fire_at, duration_ms))
    # A key's first valid item is the one that may create; later ones repeat it.
    owners: dict[str, _Pending] = {}
    repeats: list[_Pending] = []
    fresh: list[_Pending] = []
    for pending in valid:
        key = pending.item.idempotency_key
        if key and key in owners:
            repeats.append(pending)
            continue
        if key:
            owners[key] = pending
        fresh.append(pending)
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                created = _batch_insert(tenant, fresh, owners, outcomes, now)
            break
        except IntegrityError:
            # A concurrent request stored one of the keys between the lookup and the insert:
            # the transaction is gone, so look the keys up again (the winner's timer replays).
            if attempt == 2 or not owners:
                raise
    for pending in repeats:
        outcomes[pending.index] = _repeat_outcome(pending, owners, outcomes)
    if created:
        log.info("timers created", extra={"tenant": tenant.id, "event": "created", "count": len(created)})
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


def _batch_insert(
    tenant: Tenant,
    fresh: list[_Pending],
    owners: dict[str, _Pending],
    outcomes: list[BatchOutcome | None],
    now: datetime,
) -> list[Timer]:
    """The transaction of ``timers_create_batch``: replays, quotas, inserts. Fills the
    outcomes of ``fresh``; return the timers created."""
    stored: dict[str, Timer] = {}
    if owners:
        stored = {
            t.idempotency_key: t
            for t in Timer.objects.filter(tenant=tenant, idempotency_key__in=list(owners))
            if t.idempotency_key
        }
        expired = [t.pk for t in stored.values() if t.created_at < now - settings.MINOOTS_IDEMPOTENCY_TTL]
        if expired:
            # Expired: free the keys so that these requests can take them.
            Timer.objects.filter(pk__in=expired).update(idempotency_key=None)
            stored = {k: t for k, t in stored.items() if t.pk not in set(expired)}
    new: list[_Pending] = []
    for pending in fresh:
        key = pending.item.idempotency_key
        existing = stored.get(key) if key else None
        if existing is None:
            new.append(pending)
        elif existing.request_hash != pending.item.fingerprint:
            outcomes[pending.index] = BatchOutcome(error=_key_conflict(key or "", existing.id))
        else:
            outcomes[pending.index] = BatchOutcome(timer=existing)
    admission = quota_admit(tenant=tenant, now=now, count=len(new))
    horizon_end = now + settings.MINOOTS_ARM_HORIZON
    rows = NewTimers(tenant_id=tenant.id, created_at=now)
    armed: list[datetime] = []
    for position, pending in enumerate(new):
        refused = admission.refusal(position)
        if refused is not None:
            outcomes[pending.index] = BatchOutcome(error=_quota_exceeded(tenant, refused))
            continue
        spec, fire_at = pending.item.spec, pending.fire_at
        arm_now = fire_at <= horizon_end
        timer = rows.add(
            name=spec.name,
            armed=arm_now,
            duration_ms=pending.duration_ms,
            fire_at=fire_at,
            requested_by=spec.requested_by,
            metadata=spec.metadata,
            labels=spec.labels,
            action_bundle=spec.action_bundle,
            agent_binding=spec.agent_binding,
            idempotency_key=pending.item.idempotency_key or None,
            request_hash=pending.item.fingerprint,
        )
        if arm_now:
            armed.append(fire_at)
        outcomes[pending.index] = BatchOutcome(timer=timer, created=True)
    if not rows:
        return []
    rows.insert()  # the timers and their created (+ armed) events, one statement on Postgres
    if armed:
        transaction.on_commit(lambda: ticks.ensure_ticks(armed))
    _count_on_commit([tenant.id] * len(rows), "created")
    return rows.timers


def _key_conflict(key: str, timer_id: UUID | None) -> Conflict:
    details: dict[str, Any] = {"idempotencyKey": key}
    if timer_id is not None:
        details["timerId"] = str(timer_id)
    return Conflict("Idempotency-Key was already used with a different request body", details=details)


def _repeat_outcome(
    pending: _Pending, owners: dict[str, _Pending], outcomes: list[BatchOutcome | None]
) -> BatchOutcome:
    """A key repeated within a batch: the first item's timer (a replay) for the same body,
    its refusal if it was refused, a Conflict for another body."""
    key = pending.item.idempotency_key or ""
    owner = owners[key]
    first = outcomes[owner.index]
    assert first is not None
    if first.timer is not None and first.timer.request_hash != pending.item.fingerprint:
        return BatchOutcome(error=_key_conflict(key, first.timer.id))
    if first.timer is None and owner.item.fingerprint != pending.item.fingerprint:
        return BatchOutcome(error=_key_conflict(key, None))
    if first.timer is not None:
        return BatchOutcome(timer=first.timer)
    return first


def _count_on_commit(tenant_ids: Iterable[str], event: str) -> None:
    """Count the transition in the metrics once it is committed."""
    counts = Counter(tenant_ids)
    if counts:
        transaction.on_commit(partial(_count, counts, event), robust=True)


def _count(counts: Counter[str], event: str) -> None:
    for tenant_id, n in counts.items():
        metrics.timer_transition(tenant_id, event, n)


def _observe_lateness(lateness_ms: list[int]) -> None:
    for ms in lateness_ms:
        metrics.FIRE_LATENESS.observe(ms / 1000)


def timers_arm(*, horizon_end: datetime, limit: int) -> int:
    """scheduled -> armed for up to ``limit`` timers due before ``horizon_end``; after commit,
    one tick per bucket they fall in. Return how many were armed."""
    with transaction.atomic():
        rows = queries.arm_due(horizon_end=horizon_end, limit=limit)
        if not rows:
            return 0
        now = timezone.now()
        queries.insert_events([EventRow(timer_id, "armed", now, version, {}) for timer_id, _, version in rows])
        firsts: dict[int, datetime] = {}
        for _, fire_at, _ in rows:
            bucket = ticks.bucket_of(fire_at)
            if bucket not in firsts or fire_at < firsts[bucket]:
                firsts[bucket] = fire_at
        transaction.on_commit(lambda: ticks.ensure_ticks(list(firsts.values())))
    return len(rows)


def timers_fire(*, limit: int | None = None) -> list[ports.ClaimedTimer]:
    """armed -> fired for up to ``limit`` due timers, exactly once; return them.

    Each gets its ``fired`` event. Timers without actions then settle at once; the others go
    to the registered fired-timer handler (actions creates their runs), in this transaction.
    """
    limit = limit or settings.MINOOTS_CLAIM_BATCH
    with transaction.atomic():
        # Timers without actions settle at once, at the instant they fired (the same statement).
        claimed, settled = queries.claim_due_and_settle(limit=limit)
        if not claimed:
            return []
        _count_on_commit((c.tenant_id for c in claimed), "fired")
        _count_on_commit((tenant_id for _, tenant_id in settled), "settled")
        transaction.on_commit(partial(_observe_lateness, [c.lateness_ms for c in claimed]), robust=True)
        with_actions = [c for c in claimed if has_actions(c.action_bundle)]
        if with_actions:
            ports.fired_handler()(with_actions)
    return claimed


def _timers_finish(
    *, timer_ids: Sequence[UUID], status: TimerStatus, at: datetime | None, failed_actions: Sequence[str] = ()
) -> list[UUID]:
    """fired -> settled / failed: the one writer of both, through the two functions below."""
    at = at or timezone.now()
    reason = f"actions failed: {', '.join(failed_actions)}" if failed_actions else ""
    data: dict[str, Any] = {"failedActions": list(failed_actions)} if failed_actions else {}
    with transaction.atomic(savepoint=False):  # SQLite writes the events in a second statement
        rows = queries.finish_fired(timer_ids=timer_ids, status=status, at=at, failure_reason=reason, event_data=data)
        _count_on_commit((tenant_id for _, tenant_id in rows), str(status))
    return [timer_id for timer_id, _ in rows]


def timers_settle(*, timer_ids: Sequence[UUID], at: datetime | None = None) -> list[UUID]:
    """fired -> settled (every action succeeded, or there were none). Idempotent: timers no
    longer ``fired`` are left alone. Return the ids that moved."""
    return _timers_finish(timer_ids=timer_ids, status=TimerStatus.SETTLED, at=at)


def timer_fail(*, timer_id: UUID, failed_actions: Sequence[str], at: datetime | None = None) -> bool:
    """fired -> failed, naming the actions that failed. Idempotent; True if it moved."""
    return bool(_timers_finish(timer_ids=[timer_id], status=TimerStatus.FAILED, at=at, failed_actions=failed_actions))


def timer_reopen(*, timer_id: UUID, by: str, run_ids: Sequence[UUID], at: datetime | None = None) -> bool:
    """failed -> fired again, because an operator retries its failed action runs (``run_ids``):
    the timer settles or fails anew once they end. ``settled_at`` and ``failure_reason`` are
    cleared; the ``retried`` event names the runs and who asked. Also a fired timer (a run of it
    still running) takes the retry without a transition: True when the timer is, after this
    call, fired; False when it is in any other status (nothing happens then).
    """
    at = at or timezone.now()
    with transaction.atomic():
        current = Timer.objects.select_for_update().filter(pk=timer_id).first()
        if current is None or current.status not in (TimerStatus.FAILED, TimerStatus.FIRED):
            return False
        version = current.state_version
        if current.status == TimerStatus.FAILED:
            version += 1
            Timer.objects.filter(pk=timer_id).update(
                status=TimerStatus.FIRED, settled_at=None, failure_reason="", state_version=version
            )
        TimerEvent.objects.create(
            timer_id=timer_id,
            kind="retried",
            occurred_at=at,
            state_version=version,
            data={"runIds": [str(r) for r in run_ids], "by": by},
        )
    return True


def timer_cancel(*, timer: Timer, reason: str = "", by: str = "") -> Timer:
    """Cancel a timer that has not ended: a pending one never fires; a fired one's runs that
    have not started (pending retries, runs waiting for a slot, escalations) are cancelled
    (the registered cancelled-timer handler, in this transaction), while attempts already
    running finish and are recorded without a retry or an escalation after them. Terminal
    timers come back unchanged (idempotent)."""
    now = timezone.now()
    with transaction.atomic():
        # Locked, so that it cannot fire or settle between this read and the update (the fire
        # step's claim skips it meanwhile; an action outcome waits for the commit).
        current = Timer.objects.select_for_update().filter(pk=timer.pk).values_list("status", flat=True).first()
        was_fired = current == TimerStatus.FIRED
        updated = Timer.objects.filter(pk=timer.pk, status__in=(*PENDING_STATUSES, TimerStatus.FIRED)).update(
            status=TimerStatus.CANCELLED,
            cancelled_at=now,
            cancel_reason=reason[:500],
            cancelled_by=by[:200],
            state_version=F("state_version") + 1,
        )
        timer.refresh_from_db()
        if updated:
            TimerEvent.objects.create(
                timer=timer,
                kind="cancelled",
                occurred_at=now,
                state_version=timer.state_version,
                data={"reason": reason, "by": by, **({"afterFired": True} if was_fired else {})},
            )
            if was_fired:
                ports.cancelled_handler()(timer.pk)
            _count_on_commit([timer.tenant_id], "cancelled")
    return timer


def timer_reschedule(
    *,
    timer: Timer,
    duration: timedelta | None = None,
    fire_at: datetime | None = None,
    expected_version: int | None = None,
    by: str = "",
    refuse_past: bool = False,
    now: datetime | None = None,
) -> Timer:
    """Move a pending timer's fireAt: to ``fire_at``, or ``duration`` from now (exactly one).

    The rules of ``timer_create`` apply to the new time (positive, in the future with
    ``refuse_past``, within MINOOTS_MAX_HORIZON); a ``fire_at`` already past from an internal
    caller means now, which is how "fire now" is asked. With ``expected_version`` (the API's
    ``If-Match`` / ``stateVersion``) the change applies only to that state version: a timer
    changed since is a Conflict naming the current version, as is a timer that is no longer
    pending (fired, settled, failed, cancelled). The timer stays ``created_at`` and
    ``created_at + duration_ms == fire_at`` holds; it is armed when the new time is within
    MINOOTS_ARM_HORIZON and goes back to scheduled when it is not (a tick already published
    for the old time finds nothing to fire). Events: ``rescheduled`` (from, to, by), and
    ``armed`` when it became armed.
    """
    now = now or timezone.now()
    new_fire_at, _ = _schedule(TimerSpec(name="", duration=duration, fire_at=fire_at), now, refuse_past=refuse_past)
    arm_now = new_fire_at <= now + settings.MINOOTS_ARM_HORIZON
    with transaction.atomic():
        current = Timer.objects.select_for_update().filter(pk=timer.pk).first()
        if current is None:
            raise Conflict("Timer no longer exists", details={"timerId": str(timer.pk)})
        if current.status not in PENDING_STATUSES:
            raise Conflict(
                f"Timer is {current.status}; only a scheduled or armed timer can be rescheduled",
                details={"status": current.status, "stateVersion": current.state_version},
            )
        if expected_version is not None and current.state_version != expected_version:
            raise Conflict(
                f"Timer changed since state version {expected_version} (now {current.state_version}); "
                "read it again and retry",
                details={"stateVersion": current.state_version, "expected": expected_version},
            )
        became_armed = arm_now and current.status == TimerStatus.SCHEDULED
        version = current.state_version + 1
        events = [
            _event(
                current.pk,
                "rescheduled",
                version,
                now,
                **{"from": current.fire_at.isoformat()},
                to=new_fire_at.isoformat(),
                by=by,
            )
        ]
        if became_armed:
            version += 1
            events.append(_event(current.pk, "armed", version, now))
        Timer.objects.filter(pk=current.pk).update(
            fire_at=new_fire_at,
            duration_ms=(new_fire_at - current.created_at) // timedelta(milliseconds=1),
            status=TimerStatus.ARMED if arm_now else TimerStatus.SCHEDULED,
            state_version=version,
        )
        TimerEvent.objects.bulk_create(events)
        if arm_now:
            transaction.on_commit(lambda: ticks.ensure_tick(new_fire_at))
    _count_on_commit([current.tenant_id], "rescheduled")
    log.info(
        "timer rescheduled",
        extra={"timer_id": str(current.pk), "tenant": current.tenant_id, "event": "rescheduled"},
    )
    timer.refresh_from_db()
    return timer


def timers_append_events(*, events: Sequence[tuple[UUID, str, dict[str, Any]]], at: datetime | None = None) -> None:
    """Record action outcomes in their timers' histories (status unchanged), at each timer's
    current state version. Events of timers that no longer exist are dropped."""
    if not events:
        return
    at = at or timezone.now()
    versions = dict(Timer.objects.filter(pk__in={e[0] for e in events}).values_list("pk", "state_version"))
    queries.insert_events(
        [
            EventRow(timer_id, kind, at, versions[timer_id], data)
            for timer_id, kind, data in events
            if timer_id in versions
        ]
    )


def timer_append_event(*, timer_id: UUID, kind: str, **data: Any) -> None:
    """Record one action outcome in the timer's history (status unchanged)."""
    timers_append_events(events=[(timer_id, kind, data)])


def timers_import(*, timers: Sequence[Timer], events: Sequence[TimerEvent]) -> list[UUID]:
    """Store timers exported from an installation (this one or another) as they were there:
    status, times, state version, and their ``events`` (stored with new ids, in the order
    given). Idempotent by id: a timer already stored is left as it is, and so are its events;
    return the ids stored now.

    Not a transition: no metric counts and no quota applies. An armed timer due within the arm
    horizon gets its tick after commit (a later one's is the reconciler's, as is a scheduled
    timer's arming); a fired one's runs are the caller's to store (``actions``).
    """
    with transaction.atomic():
        existing = set(Timer.objects.filter(pk__in=[t.pk for t in timers]).values_list("pk", flat=True))
        new = [t for t in timers if t.pk not in existing]
        Timer.objects.bulk_create(new)
        stored = {t.pk for t in new}
        TimerEvent.objects.bulk_create([e for e in events if e.timer_id in stored])
        horizon_end = timezone.now() + settings.MINOOTS_ARM_HORIZON
        due = [t.fire_at for t in new if t.status == TimerStatus.ARMED and t.fire_at <= horizon_end]
        if due:
            transaction.on_commit(lambda: ticks.ensure_ticks(due))
    return [t.pk for t in new]
