"""Rows for tests: tenants, API keys, timers and action runs with sensible defaults.

``make_*`` store a row directly in the state the test names (no service call, no event row,
no message), to *arrange* a situation such as "an armed timer that is due". To exercise
creation itself, go through the API or ``schedule_timer`` (``services.timer_create``, as the
API does: a ``created`` event, armed with a tick when due within the horizon).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from rest_framework.test import APIClient

from actions.models import ActionRun, RunStatus
from timers import keys, services
from timers.models import Tenant, Timer, TimerStatus
from timers.services import TimerSpec

# The state_version a timer has after the usual path to each status (created = 1, armed = 2, ...).
_STATE_VERSIONS = {
    TimerStatus.SCHEDULED: 1,
    TimerStatus.ARMED: 2,
    TimerStatus.FIRED: 3,
    TimerStatus.SETTLED: 4,
    TimerStatus.FAILED: 4,
    TimerStatus.CANCELLED: 3,
}


def make_tenant(*, id: str = "acme", name: str | None = None, **fields: Any) -> Tenant:
    """A tenant; quotas and webhook secret keep the model's defaults unless given in ``fields``."""
    return Tenant.objects.create(id=id, name=id.capitalize() if name is None else name, **fields)


def make_api_key(*, tenant: Tenant, name: str = "test", roles: list[str] | None = None) -> str:
    """A new API key of ``tenant`` (default roles unless ``roles``); returns the raw key."""
    _, raw = keys.api_key_create(tenant=tenant, name=name, roles=roles)
    return raw


def api_client(*, api_key: str | None = None) -> APIClient:
    """A DRF test client sending ``X-API-Key: api_key`` (anonymous without one)."""
    client = APIClient()
    if api_key is not None:
        client.credentials(HTTP_X_API_KEY=api_key)
    return client


def action_bundle(
    actions: Sequence[dict[str, Any]], *, concurrency: int | None = None, retry_policy: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An ``actionBundle`` as stored: the actions, plus ``concurrency`` / ``retryPolicy`` when given."""
    bundle: dict[str, Any] = {"actions": list(actions)}
    if concurrency is not None:
        bundle["concurrency"] = concurrency
    if retry_policy is not None:
        bundle["retryPolicy"] = retry_policy
    return bundle


def _timer_row(
    *,
    tenant: Tenant,
    status: str,
    name: str,
    fire_at: datetime | None,
    actions: Sequence[dict[str, Any]] | None,
    concurrency: int | None,
    retry_policy: dict[str, Any] | None,
    now: datetime,
    fields: dict[str, Any],
) -> Timer:
    fire_at = now - timedelta(milliseconds=1) if fire_at is None else fire_at
    created_at = fields.pop("created_at", now)
    values: dict[str, Any] = {
        "duration_ms": max(1, (fire_at - created_at) // timedelta(milliseconds=1)),
        "state_version": _STATE_VERSIONS[TimerStatus(status)],
    }
    if actions is not None:
        values["action_bundle"] = action_bundle(actions, concurrency=concurrency, retry_policy=retry_policy)
    values.update(fields)
    return Timer(tenant=tenant, status=status, name=name, created_at=created_at, fire_at=fire_at, **values)


def make_timer(
    *,
    tenant: Tenant,
    status: str = TimerStatus.ARMED,
    name: str = "t",
    fire_at: datetime | None = None,
    actions: Sequence[dict[str, Any]] | None = None,
    concurrency: int | None = None,
    retry_policy: dict[str, Any] | None = None,
    **fields: Any,
) -> Timer:
    """A timer stored as it is after the usual path to ``status`` (default: armed), no events.

    ``fire_at`` defaults to one millisecond ago (due now); ``state_version`` follows the status
    (scheduled 1, armed 2, fired 3, ...); ``actions`` (with ``concurrency`` / ``retry_policy``)
    become the ``action_bundle``. Any other model field may be given in ``fields``.
    """
    timer = _timer_row(
        tenant=tenant,
        status=status,
        name=name,
        fire_at=fire_at,
        actions=actions,
        concurrency=concurrency,
        retry_policy=retry_policy,
        now=timezone.now(),
        fields=dict(fields),
    )
    timer.save(force_insert=True)
    return timer


def make_timers(
    *,
    tenant: Tenant,
    fire_ats: Sequence[datetime],
    status: str = TimerStatus.ARMED,
    name_prefix: str = "t",
    **fields: Any,
) -> list[Timer]:
    """One timer per ``fire_ats`` entry, named ``<name_prefix><i>``, in one INSERT (see ``make_timer``)."""
    now = timezone.now()
    rows = [
        _timer_row(
            tenant=tenant,
            status=status,
            name=f"{name_prefix}{i}",
            fire_at=fire_at,
            actions=None,
            concurrency=None,
            retry_policy=None,
            now=now,
            fields=dict(fields),
        )
        for i, fire_at in enumerate(fire_ats)
    ]
    return Timer.objects.bulk_create(rows)


def make_run(
    *, timer: Timer, action_id: str = "a", kind: str = "webhook", status: str = RunStatus.PENDING, **fields: Any
) -> ActionRun:
    """An action run of ``timer`` (default: a pending webhook run ``a`` with empty parameters)."""
    return ActionRun.objects.create(timer=timer, action_id=action_id, kind=kind, status=status, **fields)


def schedule_timer(
    *, tenant: Tenant, in_: timedelta, name: str = "t", actions: Sequence[dict[str, Any]] | None = None
) -> Timer:
    """A timer created through ``services.timer_create`` to fire ``in_`` from now, as the API does."""
    bundle = action_bundle(actions) if actions else None
    return services.timer_create(tenant=tenant, spec=TimerSpec(name=name, duration=in_, action_bundle=bundle))[0]


def schedule_timers(*, tenant: Tenant, in_: timedelta, count: int, name_prefix: str = "t") -> list[Timer]:
    """``count`` timers created through ``services.timer_create``, all due at the same instant."""
    fire_at = timezone.now() + in_
    return [
        services.timer_create(tenant=tenant, spec=TimerSpec(name=f"{name_prefix}{i}", fire_at=fire_at))[0]
        for i in range(count)
    ]
