"""Writes on timers: create, cancel, settle. Every status change is a conditional UPDATE plus an event."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from timers.models import PENDING_STATUSES, Tenant, Timer, TimerEvent, TimerStatus

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """A refusal a client can act on; the API maps it to ``status_code``."""

    status_code = 400

    def __init__(self, message: str, *, details: Any = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.extra = extra or {}


class Conflict(ServiceError):
    status_code = 409


class QuotaExceeded(ServiceError):
    status_code = 429


class IllegalTransition(Conflict):
    pass


@dataclass(frozen=True)
class TimerSpec:
    """A validated create request (see timers.api.serializers.TimerCreateInput)."""

    name: str
    fire_at: datetime
    duration_ms: int
    requested_by: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    action_bundle: dict[str, Any] | None = None
    agent_binding: dict[str, Any] | None = None


def request_fingerprint(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _event(timer_id: UUID, kind: str, version: int, at: datetime, **data: Any) -> TimerEvent:
    return TimerEvent(timer_id=timer_id, kind=kind, occurred_at=at, state_version=version, data=data)


def _check_quotas(tenant: Tenant, now: datetime) -> None:
    from timers.quotas import QuotaExhausted, quota_check_and_count

    try:
        quota_check_and_count(tenant=tenant, now=now)
    except QuotaExhausted as exc:
        if exc.limit_type == "burst":
            message = f"Tenant '{tenant.id}' has {exc.limit} active timers, its limit"
        else:
            message = f"Tenant '{tenant.id}' created {exc.limit} timers today (UTC), its daily limit"
        raise QuotaExceeded(message, extra={"limitType": exc.limit_type}) from exc


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
    now: datetime | None = None,
) -> tuple[Timer, bool]:
    """Store a timer (armed at once when due within the horizon). Return (timer, created).

    ``now`` is the moment the request's ``fire_at`` was computed from, so that the stored
    ``created_at + duration_ms == fire_at`` holds exactly; it defaults to the current time.
    """
    from timers import ticks

    now = now or timezone.now()
    # The API refuses this with a field-specific message first; the rule itself lives here, for
    # every caller. (A fireAt already past is an input error at the API; an internal caller may
    # mean "now", and the timer then fires at once.)
    if spec.fire_at > now + settings.MINOOTS_MAX_HORIZON:
        raise ServiceError(f"fireAt: must be at most {settings.MINOOTS_MAX_HORIZON.days} days ahead")
    try:
        with transaction.atomic():
            if idempotency_key:
                replay = _idempotent_replay(tenant, idempotency_key, fingerprint, now)
                if replay is not None:
                    return replay, False
            _check_quotas(tenant, now)
            arm_now = spec.fire_at <= now + settings.MINOOTS_ARM_HORIZON
            timer = Timer.objects.create(
                tenant=tenant,
                name=spec.name,
                status=TimerStatus.ARMED if arm_now else TimerStatus.SCHEDULED,
                duration_ms=spec.duration_ms,
                created_at=now,
                fire_at=spec.fire_at,
                requested_by=spec.requested_by,
                metadata=spec.metadata,
                labels=spec.labels,
                action_bundle=spec.action_bundle,
                agent_binding=spec.agent_binding,
                state_version=2 if arm_now else 1,
                idempotency_key=idempotency_key or None,
                request_hash=fingerprint,
            )
            events = [_event(timer.id, "created", 1, now, fireAt=spec.fire_at.isoformat())]
            if arm_now:
                events.append(_event(timer.id, "armed", 2, now))
            TimerEvent.objects.bulk_create(events)
            if arm_now:
                transaction.on_commit(lambda: ticks.ensure_tick(spec.fire_at))
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the insert.
        if not idempotency_key:
            raise
        replay = _idempotent_replay(tenant, idempotency_key, fingerprint, now)
        if replay is None:
            raise
        return replay, False
    log.info("timer created", extra={"timer_id": str(timer.id), "tenant": tenant.id, "event": "created"})
    from timers import metrics

    metrics.timer_transition(tenant.id, "created")
    return timer, True


def timer_cancel(*, timer: Timer, reason: str = "", by: str = "") -> Timer:
    """Cancel a pending timer. Terminal timers come back unchanged; a fired one is a Conflict."""
    now = timezone.now()
    with transaction.atomic():
        updated = Timer.objects.filter(pk=timer.pk, status__in=PENDING_STATUSES).update(
            status=TimerStatus.CANCELLED,
            cancelled_at=now,
            cancel_reason=reason[:500],
            cancelled_by=by[:200],
            state_version=F("state_version") + 1,
        )
        timer.refresh_from_db()
        if updated:
            TimerEvent.objects.create(
                timer=timer, kind="cancelled", occurred_at=now, state_version=timer.state_version,
                data={"reason": reason, "by": by},
            )
    if updated:
        from timers import metrics

        metrics.timer_transition(timer.tenant_id, "cancelled")
        return timer
    if timer.status == TimerStatus.FIRED:
        raise Conflict(
            "Timer already fired; its actions are running and can no longer be cancelled",
            details={"status": timer.status},
        )
    return timer


def timer_finish(*, timer_id: UUID, failed_actions: list[str]) -> bool:
    """Move a fired timer to settled (no failed actions) or failed. Idempotent; True if it moved."""
    now = timezone.now()
    status = TimerStatus.FAILED if failed_actions else TimerStatus.SETTLED
    reason = f"actions failed: {', '.join(failed_actions)}" if failed_actions else ""
    with transaction.atomic():
        updated = Timer.objects.filter(pk=timer_id, status=TimerStatus.FIRED).update(
            status=status, settled_at=now, failure_reason=reason, state_version=F("state_version") + 1
        )
        if not updated:
            return False
        timer = Timer.objects.only("state_version", "tenant_id").get(pk=timer_id)
        TimerEvent.objects.create(
            timer_id=timer_id, kind=str(status), occurred_at=now, state_version=timer.state_version,
            data={"failedActions": failed_actions} if failed_actions else {},
        )
    from timers import metrics

    metrics.timer_transition(timer.tenant_id, str(status))
    return True


def timer_append_event(*, timer_id: UUID, kind: str, **data: Any) -> None:
    """Record an action outcome in the timer's history (status unchanged)."""
    version = Timer.objects.filter(pk=timer_id).values_list("state_version", flat=True).first()
    if version is not None:
        TimerEvent.objects.create(timer_id=timer_id, kind=kind, occurred_at=timezone.now(), state_version=version, data=data)
