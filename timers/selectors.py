"""Reads on tenants, timers and their events; timers and events always scoped to the caller's tenant."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import connection
from django.db.models import Count, Max, QuerySet, TextField
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


# A list filtered by label or fireAt is the ids of its timers, sorted, when at most this many
# of them match (an exact count, bounded by this). Above it the planner picks the plan from its
# estimates, which holds while matches are spread over the list's order. Small enough that the
# ids cost little to send and look up (a request of 1,000 ids ~35 ms on ten million timers),
# and that the planner does not walk the list's index instead, filtering by id.
LIST_BY_ID_LIMIT = 1000
# Index entries of a fireAt window read for the newest of its timers, at most (a few ms).
WINDOW_NEWEST_LIMIT = 20_000


def timers_list(
    *,
    tenant: Tenant | None,
    status: list[str] | None = None,
    name: str | None = None,
    labels: list[tuple[str, str]] | None = None,
    fire_after: datetime | None = None,
    fire_before: datetime | None = None,
) -> QuerySet[Timer]:
    """Timers of ``tenant`` (every tenant's for None) passing every filter, newest first (the
    id breaks ties): the API's list, which pages through it by ``created_at``.

    The status and name filters have an index in the list's order (``timer_tenant_status_created``,
    ``timer_tenant_name``): a page reads a page. A label or a fireAt window has none, and the
    planner's estimate of how many timers match cannot tell it where in the list's order they
    are: it walked the tenant's timers in that order for a label no timer has (7.0 s on ten
    million) or a window whose timers were created long ago. So on Postgres their own index
    (``timer_labels`` with ``labels @> {key: value}``, ``timer_tenant_fire_at``) first counts
    the matching timers, up to ``LIST_BY_ID_LIMIT``; when no more match, the list is those ids.
    A fireAt window of more starts at its newest timer (``_narrowed``). Not bounded still: a
    label matching more than the bound, or a window more than ``WINDOW_NEWEST_LIMIT``, whose
    timers lie far apart in the list's order (the walk crosses the gaps between them);
    ``tests/timers/test_api_list.py`` checks the plans.
    """
    qs = timers_visible(tenant=tenant)
    if status:
        qs = qs.filter(status__in=status)
    if name:
        qs = qs.filter(name=name)
    postgres = connection.vendor == "postgresql"
    for i, (key, value) in enumerate(labels or []):
        if postgres:
            # Containment is what the GIN index answers; labels are a string map, so it holds
            # exactly when the key's text is the value.
            qs = qs.filter(labels__contains={key: value})
            continue
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
    # timer_tenant_fire_at starts with the tenant: every tenant's window has no index of its own.
    fire_window = tenant is not None and bool(fire_after or fire_before)
    if postgres and (labels or fire_window):
        qs = _narrowed(qs, fire_window=fire_window)
    return qs.order_by("-created_at", "-id")


def _narrowed(qs: QuerySet[Timer], *, fire_window: bool) -> QuerySet[Timer]:
    """``qs`` limited to the ids of its timers when at most ``LIST_BY_ID_LIMIT`` of them match.
    Unordered, the count stops at the bound and the planner reads it by the most selective
    index it has (the GIN index for a rare label, the fireAt one for a narrow window; any scan
    stops early for a common one).

    Above the bound, a fireAt window of at most ``WINDOW_NEWEST_LIMIT`` timers is limited to
    those created no later than the newest of them (read from ``timer_tenant_fire_at`` alone):
    the walk in the list's order then starts at its first match, not above every timer
    created since (timers created together tend to fire together)."""
    ids = list(qs.order_by().values_list("pk", flat=True)[: LIST_BY_ID_LIMIT + 1])
    if len(ids) <= LIST_BY_ID_LIMIT:
        return qs.filter(pk__in=ids)
    if not fire_window:
        return qs
    # Over a LIMIT subquery: Postgres cannot answer this MAX by walking the created_at index
    # from the newest timer, which is the walk this avoids.
    found = (
        qs.order_by()
        .values("created_at")[: WINDOW_NEWEST_LIMIT + 1]
        .aggregate(n=Count("created_at"), newest=Max("created_at"))
    )
    if found["newest"] is None or found["n"] > WINDOW_NEWEST_LIMIT:  # None: purged since the count
        return qs
    return qs.filter(created_at__lte=found["newest"])


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
