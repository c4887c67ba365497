"""Per-tenant quotas (active timers, creates per UTC day) at a cost that does not grow with
the tenant's number of timers.

An exact COUNT over a tenant's timers costs as much as the tenant is big (a million pending
timers is a million index entries per create). Instead each tenant has two counters in the
cache (Redis in production): seeded by one bounded COUNT when missing or expired, then
incremented by every create. Fired, settled and cancelled timers do not decrement the active
counter, so it only over-estimates; when it reaches the limit, an exact count decides. The
counters expire after ``SEED_TTL`` seconds, so the estimate is re-seeded from the database
regularly. Concurrent creates may overshoot a limit by the few requests in flight at once.

With Redis (production) both counters are counted in one round trip: a script that increments
each counter that exists (``_count_both``), the daily one by the same number as the active one.
When the active estimate is over its limit the exact count decides how many fit, and the daily
counter gets back what it was given for the others; the figures are those of counting one
counter after the other. Other caches (the embedded SQLite mode's file cache) count them one
after the other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache

from timers.models import PENDING_STATUSES, Tenant, Timer, TimerStatus

log = logging.getLogger(__name__)

SEED_TTL = 10  # seconds


class QuotaExhausted(Exception):
    def __init__(self, limit_type: str, limit: int) -> None:
        super().__init__(limit_type)
        self.limit_type = limit_type
        self.limit = limit


def _active_count(tenant: Tenant) -> int:
    statuses = [*PENDING_STATUSES, TimerStatus.FIRED]
    return Timer.objects.filter(tenant=tenant, status__in=statuses)[: tenant.max_active_timers].count()


def _created_since(tenant: Tenant, since: datetime) -> int:
    return Timer.objects.filter(tenant=tenant, created_at__gte=since)[: tenant.max_creates_per_day].count()


def _estimate(key: str, seed: Callable[[], int], count: int = 1) -> int:
    """The counter after counting ``count`` creates (seeding it from ``seed()`` when missing)."""
    try:
        value = cache.incr(key, count)
    except ValueError:  # missing or expired
        value = seed() + count
        cache.set(key, value, timeout=SEED_TTL)
    except Exception:  # cache down: count exactly
        value = seed() + count
    return int(value)


def _fitting(key: str, count: int, limit: int, seed: Callable[[], int]) -> int:
    """How many of ``count`` creates fit ``limit``: all while the estimate stays within it,
    else what the exact count leaves (the counter re-seeded with it and those that fit)."""
    if count <= 0 or _estimate(key, seed, count) <= limit:
        return max(count, 0)
    exact = seed()
    fit = max(0, min(count, limit - exact))
    _reseed(key, exact + fit)
    return fit


@dataclass(frozen=True)
class Admission:
    """Of ``count`` creates counted together: the first ``burst`` fit the active-timer quota,
    the first ``daily`` (at most ``burst``) fit both."""

    count: int
    burst: int
    daily: int

    def refusal(self, position: int) -> str | None:
        """The limit that refuses the create at ``position`` (0-based), or None."""
        if position >= self.burst:
            return "burst"
        if position >= self.daily:
            return "daily"
        return None


# KEYS: the counters; ARGV[1]: the increment. Each existing counter incremented; nil for one missing.
_INCR_EXISTING = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then out[i] = redis.call('INCRBY', key, ARGV[1]) else out[i] = false end
end
return out
"""


_SCRIPT: list[Any] = []  # the registered script; redis-py's Script takes the client per call


def _incr_existing_script(client: Any) -> Any:
    """_INCR_EXISTING registered once per process (Django makes a client per call, over pools
    it keeps: the script is called with each call's client)."""
    if not _SCRIPT:
        _SCRIPT.append(client.register_script(_INCR_EXISTING))
    return _SCRIPT[0]


def _count_both(keys: list[str], count: int) -> list[int | None] | None:
    """Increment each of ``keys`` that exists by ``count`` in one Redis round trip: the new
    values (None where missing), or None when the cache is not Redis or did not answer."""
    backend: Any = caches["default"]
    if not isinstance(backend, RedisCache):
        return None
    try:
        made = [backend.make_and_validate_key(k) for k in keys]
        client = backend._cache.get_client(made[0], write=True)
        # EVALSHA, not EVAL: the script's text is not sent with every create (redis-py loads it
        # again by itself after a Redis restart). Atomic, so a counter is never counted twice
        # nor half. A timeout after Redis ran it is counted again by the fallback below, like a
        # plain INCR retried: it can over-count (refuse early), never under-count.
        values = _incr_existing_script(client)(keys=made, args=[count], client=client)
    except Exception:
        log.warning("quota counter cache unavailable", exc_info=True)
        return None
    return [None if v is None else int(v) for v in values]


def _seeded(key: str, value: int | None, seed: Callable[[], int], count: int) -> int:
    """The counter after counting ``count`` (``value``), seeding it when it was missing."""
    if value is not None:
        return value
    value = seed() + count
    _reseed(key, value)
    return value


def quota_admit(*, tenant: Tenant, now: datetime, count: int) -> Admission:
    """Count ``count`` creates against the tenant's quotas at once (one counter update per
    quota, whatever ``count``; one Redis round trip for both); the first ones up to each limit
    are admitted."""
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    active_key = f"quota:active:{tenant.pk}"
    daily_key = f"quota:daily:{tenant.pk}:{day_start:%Y%m%d}"
    counted = _count_both([active_key, daily_key], count) if count > 0 else None
    if counted is not None:
        return _admit_counted(tenant, day_start, count, active_key, daily_key, counted)
    burst = _fitting(active_key, count, tenant.max_active_timers, lambda: _active_count(tenant))
    daily = _fitting(
        daily_key,
        burst,
        tenant.max_creates_per_day,
        lambda: _created_since(tenant, day_start),
    )
    return Admission(count=count, burst=burst, daily=daily)


def _admit_counted(
    tenant: Tenant, day_start: datetime, count: int, active_key: str, daily_key: str, counted: list[int | None]
) -> Admission:
    """``quota_admit`` after ``_count_both`` counted ``count`` on both counters."""

    def active_seed() -> int:
        return _active_count(tenant)

    def daily_seed() -> int:
        return _created_since(tenant, day_start)

    burst = count
    if _seeded(active_key, counted[0], active_seed, count) > tenant.max_active_timers:
        exact = active_seed()
        burst = max(0, min(count, tenant.max_active_timers - exact))
        _reseed(active_key, exact + burst)
    daily_value = counted[1]
    if daily_value is not None and burst < count:
        # The daily counter was given ``count``; only ``burst`` are counted there.
        daily_value = _give_back(daily_key, count - burst)
    if burst <= 0:
        return Admission(count=count, burst=0, daily=0)
    daily = burst
    if _seeded(daily_key, daily_value, daily_seed, burst) > tenant.max_creates_per_day:
        exact = daily_seed()
        daily = max(0, min(burst, tenant.max_creates_per_day - exact))
        _reseed(daily_key, exact + daily)
    return Admission(count=count, burst=burst, daily=daily)


def _give_back(key: str, count: int) -> int | None:
    try:
        return int(cache.decr(key, count))
    except Exception:  # expired meanwhile (re-seeded next time) or the cache is down
        return None


def quota_check_and_count(*, tenant: Tenant, now: datetime) -> None:
    """Count one create against the tenant's quotas; raise QuotaExhausted when over."""
    refused = quota_admit(tenant=tenant, now=now, count=1).refusal(0)
    if refused == "burst":
        raise QuotaExhausted("burst", tenant.max_active_timers)
    if refused == "daily":
        raise QuotaExhausted("daily", tenant.max_creates_per_day)


def _reseed(key: str, value: int) -> None:
    try:
        cache.set(key, value, timeout=SEED_TTL)
    except Exception:
        log.warning("quota counter cache unavailable", exc_info=True)
