"""Reads for the operator dashboard (the admin's front page), every one bounded.

Ten million timers in the table must not slow the page, so no read here visits the whole
table. On Postgres a count is the planner's estimate first (``bounded_counts``): beyond
``EXACT_STATUS_COUNT`` rows it is shown as that estimate ("≈ 452,000", from the statistics
ANALYZE keeps), below it counted exactly, reading at most that many index entries (counting
400,000 entries costs ~40 ms, more when the visibility map lags a bulk load). On SQLite counts
stop at ``COUNT_CAP`` (the page shows "100,000+"). Pending timers are read through the partial
indexes on ``fire_at`` (``timer_tenant_pending_fire_at`` for one tenant), statuses through
``timer_status_created`` / ``timer_tenant_status_created``, fires through
``timer_fired_window`` (fired_at, lateness_ms, tenant: the histograms come from the index
alone). Lateness is read as histograms per minute and hour, each final one once (see
``FINAL_AFTER``), so its cost follows neither the number of timers kept nor the fire rate; the
percentiles are exact (nearest rank, as Postgres' ``percentile_disc``). On SQLite, the embedded
mode, the histograms are built from the window's values in Python.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from timers.models import PENDING_STATUSES, Timer, TimerStatus

log = logging.getLogger(__name__)

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

# Lateness comes from histograms (lateness ms -> fires) per UTC minute and hour: a minute (an
# hour) whose fires have all committed (FINAL_AFTER after it ended) is read once from the
# database and then kept in the cache, so a render reads at most two partial minutes live, up to
# 60 minutes and 23 hours from the cache, whatever the fire rate: a busy installation (720,000
# fires an hour at 200/s) rendered the last 24 hours' percentiles from every fire in them.
# Percentiles from a histogram are exact (nearest rank, as percentile_disc and the twin below).
FINAL_AFTER = timedelta(seconds=60)
_HISTOGRAM_TTL = 26 * 3600  # seconds: the 24 h window, and then some
_MINUTE, _HOUR = timedelta(minutes=1), timedelta(hours=1)

# Static statement: ``%(tenant)s IS NULL`` folds away once psycopg has put the value in.
_HISTOGRAM_SQL = """
SELECT date_trunc(%(unit)s, fired_at AT TIME ZONE 'UTC') AS slot, lateness_ms, count(*)
FROM timers_timer
WHERE fired_at IS NOT NULL AND fired_at >= %(since)s AND fired_at < %(until)s AND lateness_ms IS NOT NULL
  AND (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
GROUP BY 1, 2
"""

Histogram = dict[int, int]


def _from_histogram(histogram: Histogram) -> Lateness:
    fires = sum(histogram.values())
    if not fires:
        return Lateness(fires=0)
    ordered = sorted(histogram.items())
    found = []
    for fraction in PERCENTILES:
        rank, seen = max(1, math.ceil(fraction * fires)), 0
        for value, count in ordered:
            seen += count
            if seen >= rank:
                found.append(value)
                break
    p50, p95, p99 = found
    return Lateness(fires=fires, p50=p50, p95=p95, p99=p99, max=ordered[-1][0])


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


def _floor(moment: datetime, unit: timedelta) -> datetime:
    moment = moment.astimezone(UTC)
    if unit == _HOUR:
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(second=0, microsecond=0)


def _read(tenant_id: str | None, since: datetime, until: datetime, unit: timedelta) -> dict[datetime, Histogram]:
    """The histograms per ``unit`` (minute or hour) of the fires in [since, until), from the
    database; slots without fires are left out."""
    found: dict[datetime, Histogram] = {}
    if since >= until:
        return found
    if connection.vendor == "postgresql":
        params = {"unit": "hour" if unit == _HOUR else "minute", "since": since, "until": until, "tenant": tenant_id}
        with connection.cursor() as cur:
            cur.execute(_HISTOGRAM_SQL, params)
            for slot, late, count in cur.fetchall():
                found.setdefault(slot.replace(tzinfo=UTC), {})[int(late)] = int(count)
        return found
    for fired_at, late in _window(tenant_id, since, until).values_list("fired_at", "lateness_ms"):
        if fired_at is None or late is None:  # excluded by the filter; for the type checker
            continue
        histogram = found.setdefault(_floor(fired_at, unit), {})
        histogram[late] = histogram.get(late, 0) + 1
    return found


_GENERATION_KEY = "dashboard:lateness:generation"


def histograms_forget() -> None:
    """Fires were deleted (``minoots prune``): the histograms kept so far count them, so the
    next render reads every final minute and hour again (the kept ones expire unread)."""
    try:
        cache.set(_GENERATION_KEY, time.time_ns(), timeout=None)
    except Exception:
        log.warning("dashboard cache unavailable", exc_info=True)


def _generation() -> str:
    try:
        return str(cache.get(_GENERATION_KEY) or 0)
    except Exception:
        return "0"


def _key(tenant_id: str | None, unit: timedelta, start: datetime, generation: str) -> str:
    unit_name = "h" if unit == _HOUR else "m"
    return f"dashboard:lateness:{generation}:{unit_name}:{tenant_id or '*'}:{int(start.timestamp())}"


def _final(tenant_id: str | None, slots: list[datetime], unit: timedelta) -> dict[datetime, Histogram]:
    """The histograms of whole, final slots: from the cache, the missing ones read in one
    statement over their span and kept."""
    if not slots:
        return {}
    generation = _generation()
    keys = {slot: _key(tenant_id, unit, slot, generation) for slot in slots}
    try:
        cached = cache.get_many(list(keys.values()))
    except Exception:  # the cache is down: read them all
        log.warning("dashboard cache unavailable", exc_info=True)
        cached = {}
    found = {slot: cached[key] for slot, key in keys.items() if key in cached}
    missing = [slot for slot in slots if slot not in found]
    if missing:
        read = _read(tenant_id, min(missing), max(missing) + unit, unit)
        fresh = {slot: read.get(slot, {}) for slot in missing}
        found.update(fresh)
        try:
            cache.set_many({keys[slot]: h for slot, h in fresh.items()}, timeout=_HISTOGRAM_TTL)
        except Exception:  # the next render reads them again
            log.warning("dashboard cache unavailable", exc_info=True)
    return found


def _histograms(
    tenant_id: str | None, since: datetime, until: datetime, *, hours: bool
) -> list[tuple[datetime, Histogram]]:
    """(slot, histogram) covering exactly the fires in [since, until): whole final hours (with
    ``hours``) and minutes through the cache, the partial minute at either end and the minutes
    not final yet read live, per minute."""
    final_before = timezone.now() - FINAL_AFTER
    live: list[tuple[datetime, datetime]] = []
    whole: dict[timedelta, list[datetime]] = {_MINUTE: [], _HOUR: []}
    cursor = since
    if _floor(cursor, _MINUTE) != cursor:
        head_end = min(until, _floor(cursor, _MINUTE) + _MINUTE)
        live.append((cursor, head_end))
        cursor = head_end
    while cursor < until:
        if hours and _floor(cursor, _HOUR) == cursor and cursor + _HOUR <= min(until, final_before):
            whole[_HOUR].append(cursor)
            cursor += _HOUR
        elif cursor + _MINUTE <= min(until, final_before):
            whole[_MINUTE].append(cursor)
            cursor += _MINUTE
        else:
            live.append((cursor, until))
            break
    pieces: list[tuple[datetime, Histogram]] = []
    for unit, slots in whole.items():
        pieces.extend(_final(tenant_id, slots, unit).items())
    for start, end in live:
        pieces.extend(_read(tenant_id, start, end, _MINUTE).items())
    return sorted(pieces, key=lambda piece: piece[0])


def lateness(*, tenant_id: str | None, since: datetime, until: datetime) -> Lateness:
    """Lateness of the timers fired in [since, until)."""
    merged: Histogram = {}
    for _, histogram in _histograms(tenant_id, since, until, hours=True):
        for late, count in histogram.items():
            merged[late] = merged.get(late, 0) + count
    return _from_histogram(merged)


def lateness_per_minute(*, tenant_id: str | None, since: datetime, until: datetime) -> list[MinuteLateness]:
    """Fires and lateness per UTC minute in [since, until), minutes without fires left out."""
    by_minute: dict[datetime, Histogram] = {}
    for minute, histogram in _histograms(tenant_id, since, until, hours=False):
        into = by_minute.setdefault(minute, {})
        for late, count in histogram.items():
            into[late] = into.get(late, 0) + count
    return [MinuteLateness(minute=m, lateness=_from_histogram(h)) for m, h in sorted(by_minute.items()) if h]
