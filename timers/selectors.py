"""Reads on tenants, timers and their events; timers and events always scoped to the caller's tenant."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import connection
from django.db.models import QuerySet, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast

from timers.models import ApiKey, Tenant, Timer, TimerEvent


def tenant_get(*, tenant_id: str) -> Tenant | None:
    """The tenant with this id; None also for ids that cannot be one (not a slug, NUL, too long),
    which never reach the database (Postgres refuses a NUL in a query parameter)."""
    try:
        validate_slug(tenant_id)
    except ValidationError:
        return None
    if len(tenant_id) > (Tenant._meta.get_field("id").max_length or 64):
        return None
    return Tenant.objects.filter(pk=tenant_id).first()


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


def timer_events_after(*, tenant: Tenant | None, after_id: int, limit: int) -> list[TimerEvent]:
    """Up to ``limit`` events of ``tenant``'s timers (every tenant's for None) with an id above
    ``after_id``, oldest first, each with its timer loaded."""
    qs = TimerEvent.objects.filter(id__gt=after_id).select_related("timer").order_by("id")
    if tenant is not None:
        qs = qs.filter(timer__tenant=tenant)
    return list(qs[:limit])


def timer_event_latest_id() -> int:
    """The id of the newest event of any tenant (0 without one): a position to read after, not
    data, so not scoped (``timer_events_after`` is); the primary key answers it at once."""
    return TimerEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def api_keys_list(*, tenant: Tenant | None, include_revoked: bool = False) -> QuerySet[ApiKey]:
    """Keys of ``tenant`` (every tenant's for None), newest first; revoked ones only when asked."""
    qs = ApiKey.objects.all() if tenant is None else ApiKey.objects.filter(tenant=tenant)
    if not include_revoked:
        qs = qs.filter(revoked_at__isnull=True)
    return qs.order_by("-created_at", "-id")


def api_key_get(*, prefix: str) -> ApiKey | None:
    """The key with this prefix (revoked or not); None for text that cannot be a prefix."""
    if not (
        prefix.isascii() and prefix.isalnum() and len(prefix) <= (ApiKey._meta.get_field("prefix").max_length or 16)
    ):
        return None
    return ApiKey.objects.filter(prefix=prefix).first()


def timers_overdue(*, status: str, before: datetime) -> tuple[int, datetime | None]:
    """How many pending timers of ``status`` were due before ``before``, and the oldest fireAt
    (the partial index on pending timers' fire_at answers both)."""
    qs = Timer.objects.filter(status=status, fire_at__lt=before)
    return qs.count(), qs.order_by("fire_at").values_list("fire_at", flat=True).first()


def database_clock() -> datetime | None:
    """The database server's own clock (Postgres ``clock_timestamp()``); None on SQLite, which
    runs in this process on this host's clock."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cur:
        cur.execute("SELECT clock_timestamp()")
        row = cur.fetchone()
    value: datetime = row[0]
    return value
