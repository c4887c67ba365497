"""Reads on timers, always scoped to the caller's tenant."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from django.db.models import QuerySet, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast

from timers.models import Tenant, Timer, TimerEvent


def timers_visible(*, tenant: Tenant | None) -> QuerySet[Timer]:
    """Timers of ``tenant``; every tenant's for a staff operator without one (tenant None)."""
    qs = Timer.objects.all()
    return qs if tenant is None else qs.filter(tenant=tenant)


def timers_list(
    *,
    tenant: Tenant | None,
    status: list[str] | None = None,
    name: str | None = None,
    labels: list[tuple[str, str]] | None = None,
    fire_after: datetime | None = None,
    fire_before: datetime | None = None,
) -> QuerySet[Timer]:
    qs = timers_visible(tenant=tenant)
    if status:
        qs = qs.filter(status__in=status)
    if name:
        qs = qs.filter(name=name)
    for i, (key, value) in enumerate(labels or []):
        # KeyTextTransform works on Postgres and SQLite alike (jsonb ->> / json_extract). The Cast
        # makes the comparison a plain text one: on the bare transform Django picks its JSON exact
        # lookup, which on SQLite wraps the value in JSON_EXTRACT(value, '$') and fails with
        # "malformed JSON" for an ordinary string.
        alias = f"_label_{i}"
        qs = qs.annotate(**{alias: Cast(KeyTextTransform(key, "labels"), TextField())}).filter(**{alias: value})
    if fire_after:
        qs = qs.filter(fire_at__gte=fire_after)
    if fire_before:
        qs = qs.filter(fire_at__lt=fire_before)
    return qs.order_by("-created_at", "-id")


def timer_get(*, tenant: Tenant | None, timer_id: UUID) -> Timer | None:
    return timers_visible(tenant=tenant).filter(pk=timer_id).first()


def timer_events(*, timer: Timer) -> QuerySet[TimerEvent]:
    return TimerEvent.objects.filter(timer=timer).order_by("id")
