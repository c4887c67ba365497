"""Reads for the operator dashboard (the admin's front page), every one bounded.

Ten million timers in the table must not slow the page, so no read here visits the whole
table. On Postgres a count is the planner's estimate first (``bounded_counts``): beyond
``EXACT_STATUS_COUNT`` rows it is shown as that estimate ("≈ 452,000", from the statistics
ANALYZE keeps), below it counted exactly, reading at most that many index entries (counting
400,000 entries costs ~40 ms, more when the visibility map lags a bulk load). On SQLite counts
stop at ``COUNT_CAP`` (the page shows "100,000+"). Pending timers are read through the partial
indexes on ``fire_at`` (``timer_tenant_pending_fire_at`` for one tenant), statuses through
``timer_status_created`` / ``timer_tenant_status_created``, fires through
``timer_fired_window`` (fired_at, lateness_ms, tenant: the percentiles come from the index
alone). The cost follows what is fired in the window, never the number of timers kept.
Percentiles are computed by Postgres (``percentile_disc``); on SQLite, the embedded mode, from
the window's values in Python (the plain twin).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet

from timers.models import PENDING_STATUSES, Timer, TimerStatus

COUNT_CAP = 100_000
EXACT_STATUS_COUNT = 10_000
PERCENTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class Count:
    """A count that stopped at ``COUNT_CAP``: ``capped`` means "at least ``value``"."""

    value: int
    capped: bool = False
    estimated: bool = False  # the planner's estimate, beyond what is counted exactly

    def __str__(self) -> str:
        if self.estimated:
            return f"≈ {self.value:,}"
        return f"{self.value:,}+" if self.capped else f"{self.value:,}"


@dataclass(frozen=True)
class Lateness:
    """Fires in a window and their lateness (ms): p50 / p95 / p99 (nearest rank) and max."""

    fires: int
    p50: int | None = None
    p95: int | None = None
    p99: int | None = None
    max: int | None = None


@dataclass(frozen=True)
class MinuteLateness:
    minute: datetime
    lateness: Lateness


@dataclass(frozen=True)
class Overdue:
    """Pending timers past their fireAt by more than the repair grace."""

    status: str
    count: Count
    oldest: Timer | None
    oldest_late_ms: int | None


def capped_count(qs: QuerySet[Any], cap: int = COUNT_CAP) -> Count:
    """``qs.count()``, but reading at most ``cap`` + 1 rows."""
    n = qs.order_by().values("pk")[: cap + 1].count()
    return Count(cap, capped=True) if n > cap else Count(n)


def _timers(tenant_id: str | None) -> QuerySet[Timer]:
    qs = Timer.objects.all()
    return qs if tenant_id is None else qs.filter(tenant_id=tenant_id)


def _explained_rows(sql: str, params: Any) -> Any:
    with connection.cursor() as cur:
        cur.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        (plan,) = cur.fetchone()
    if isinstance(plan, str):  # psycopg2 parses json, but a driver may hand back the text
        plan = json.loads(plan)
    return plan[0]["Plan"]


def estimated_rows(qs: QuerySet[Any]) -> int | None:
    """Postgres' planner estimate of the rows ``qs`` returns (from the statistics ANALYZE and
    autovacuum keep: no row is read); None on SQLite, which has none."""
    if connection.vendor != "postgresql":
        return None
    sql, params = qs.order_by().query.sql_with_params()
    return int(_explained_rows(sql, params)["Plan Rows"])


def _estimates(querysets: list[QuerySet[Any]]) -> list[int]:
    """``estimated_rows`` of each, from one EXPLAIN of their UNION ALL (one round trip): the
    Append's children are the querysets in order; per queryset if the planner folded any."""
    parts: list[str] = []
    params: list[Any] = []
    for qs in querysets:
        sql, more = qs.order_by().values("pk").query.sql_with_params()
        parts.append(f"({sql})")
        params.extend(more)
    plan = _explained_rows(" UNION ALL ".join(parts), params)
    if len(querysets) == 1:
        return [int(plan["Plan Rows"])]
    children = plan.get("Plans", [])
    if plan["Node Type"] == "Append" and len(children) == len(querysets):
        return [int(child["Plan Rows"]) for child in children]
    return [int(estimated_rows(qs) or 0) for qs in querysets]


def _capped_counts(querysets: list[QuerySet[Any]], cap: int) -> list[Count]:
    """``capped_count`` of each, in one statement (one round trip)."""
    if not querysets:
        return []
    parts: list[str] = []
    params: list[Any] = []
    for qs in querysets:
        sql, more = qs.order_by().values("pk")[: cap + 1].query.sql_with_params()
        parts.append(f"(SELECT count(*) FROM ({sql}) AS counted)")  # noqa: S608 (the ORM's SQL; values are parameters)
        params.extend(more)
    with connection.cursor() as cur:
        cur.execute(f"SELECT {', '.join(parts)}", params)
        row = cur.fetchone()
    return [Count(cap, capped=True) if n > cap else Count(n) for n in row]


def bounded_counts(querysets: list[QuerySet[Any]]) -> list[Count]:
    """How many rows each of ``querysets`` has, read in bounded time whatever the table holds.

    Postgres: the planner's estimates first (no row read); a queryset it puts beyond
    EXACT_STATUS_COUNT gets that estimate, shown as one ("≈"); the others are counted exactly,
    reading at most EXACT_STATUS_COUNT + 1 index entries each (if there are more after all,
    the estimate, never below what was counted). Two round trips for all of them. SQLite,
    without estimates: each count stopped at COUNT_CAP. An estimate lags the table by what
    changed since the last ANALYZE.
    """
    if connection.vendor != "postgresql":
        return [capped_count(qs) for qs in querysets]
    estimates = _estimates(querysets)
    small = [i for i, estimate in enumerate(estimates) if estimate <= EXACT_STATUS_COUNT]
    counted = dict(zip(small, _capped_counts([querysets[i] for i in small], EXACT_STATUS_COUNT), strict=True))
    found = []
    for i, estimate in enumerate(estimates):
        count = counted.get(i)
        if count is None or count.capped:
            count = Count(max(EXACT_STATUS_COUNT + 1, estimate), estimated=True)
        found.append(count)
    return found


def bounded_count(qs: QuerySet[Any]) -> Count:
    """``bounded_counts`` of one queryset."""
    return bounded_counts([qs])[0]


def status_counts(*, tenant_id: str | None) -> dict[str, Count]:
    """Timers by status (``bounded_counts``: exact up to EXACT_STATUS_COUNT on Postgres)."""
    qs = _timers(tenant_id)
    counts = bounded_counts([qs.filter(status=status) for status in TimerStatus])
    return {status.value: count for status, count in zip(TimerStatus, counts, strict=True)}


def due_count(*, tenant_id: str | None, now: datetime, within: timedelta) -> Count:
    """Pending timers due from now to ``now + within``."""
    qs = _timers(tenant_id).filter(status__in=PENDING_STATUSES, fire_at__gte=now, fire_at__lt=now + within)
    return bounded_count(qs)


def fired_count(*, tenant_id: str | None, since: datetime) -> Count:
    return bounded_count(_timers(tenant_id).filter(fired_at__isnull=False, fired_at__gte=since))


def overdue(*, tenant_id: str | None, now: datetime) -> list[Overdue]:
    """Armed and scheduled timers overdue by more than MINOOTS_REPAIR_GRACE, with the oldest
    (none overdue is always an exact 0: the oldest is looked up first)."""
    before = now - settings.MINOOTS_REPAIR_GRACE
    found = []
    for status in (TimerStatus.ARMED, TimerStatus.SCHEDULED):
        qs = _timers(tenant_id).filter(status=status, fire_at__lt=before)
        oldest = qs.order_by("fire_at").select_related("tenant").first()
        late = None if oldest is None else (now - oldest.fire_at) // timedelta(milliseconds=1)
        count = Count(0) if oldest is None else bounded_count(qs)
        found.append(Overdue(status=status, count=count, oldest=oldest, oldest_late_ms=late))
    return found


# --- lateness: Postgres SQL and its Python twin ---------------------------------------------

# Static statements: ``%(tenant)s IS NULL`` folds away once psycopg has put the value in.
_LATENESS_SQL = """
SELECT count(*), percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY lateness_ms), max(lateness_ms)
FROM timers_timer
WHERE fired_at IS NOT NULL AND fired_at >= %(since)s AND fired_at < %(until)s AND lateness_ms IS NOT NULL
  AND (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
"""

_PER_MINUTE_SQL = """
SELECT date_trunc('minute', fired_at AT TIME ZONE 'UTC') AS minute, count(*),
       percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY lateness_ms), max(lateness_ms)
FROM timers_timer
WHERE fired_at IS NOT NULL AND fired_at >= %(since)s AND fired_at < %(until)s AND lateness_ms IS NOT NULL
  AND (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
GROUP BY 1 ORDER BY 1
"""


def _from_row(count: int, percentiles: list[int] | None, maximum: int | None) -> Lateness:
    if not count:
        return Lateness(fires=0)
    p50, p95, p99 = percentiles or (None, None, None)
    return Lateness(fires=count, p50=p50, p95=p95, p99=p99, max=maximum)


def _nearest_rank(ordered: list[int], fraction: float) -> int:
    # percentile_disc's definition: the first value whose cumulative share reaches fraction.
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _from_values(values: list[int]) -> Lateness:
    if not values:
        return Lateness(fires=0)
    ordered = sorted(values)
    p50, p95, p99 = (_nearest_rank(ordered, f) for f in PERCENTILES)
    return Lateness(fires=len(ordered), p50=p50, p95=p95, p99=p99, max=ordered[-1])


def _window(tenant_id: str | None, since: datetime, until: datetime) -> QuerySet[Timer]:
    return _timers(tenant_id).filter(
        fired_at__isnull=False, fired_at__gte=since, fired_at__lt=until, lateness_ms__isnull=False
    )


def lateness(*, tenant_id: str | None, since: datetime, until: datetime) -> Lateness:
    """Lateness of the timers fired in [since, until)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute(_LATENESS_SQL, {"since": since, "until": until, "tenant": tenant_id})
            count, percentiles, maximum = cur.fetchone()
        return _from_row(count, percentiles, maximum)
    values = _window(tenant_id, since, until).values_list("lateness_ms", flat=True)
    return _from_values([v for v in values if v is not None])


def lateness_per_minute(*, tenant_id: str | None, since: datetime, until: datetime) -> list[MinuteLateness]:
    """Fires and lateness per UTC minute in [since, until), minutes without fires left out."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute(_PER_MINUTE_SQL, {"since": since, "until": until, "tenant": tenant_id})
            rows = cur.fetchall()
        return [MinuteLateness(minute=m.replace(tzinfo=UTC), lateness=_from_row(c, p, mx)) for m, c, p, mx in rows]
    by_minute: dict[datetime, list[int]] = {}
    for fired_at, late in _window(tenant_id, since, until).values_list("fired_at", "lateness_ms"):
        if fired_at is None or late is None:  # excluded by the filter; for the type checker
            continue
        minute = fired_at.astimezone(UTC).replace(second=0, microsecond=0)
        by_minute.setdefault(minute, []).append(late)
    return [MinuteLateness(minute=m, lateness=_from_values(v)) for m, v in sorted(by_minute.items())]
