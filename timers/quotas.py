"""Per-tenant quotas (active timers, creates per UTC day) at a cost that does not grow with
the tenant's number of timers.

An exact COUNT over a tenant's timers costs as much as the tenant is big (a million pending
timers is a million index entries per create). Instead each tenant has two counters in the
cache (Redis in production): seeded by one bounded COUNT when missing or expired, then
incremented by every create. Fired, settled and cancelled timers do not decrement the active
counter, so it only over-estimates; when it reaches the limit, an exact count decides. The
counters expire after ``SEED_TTL`` seconds, so the estimate is re-seeded from the database
regularly. Concurrent creates may overshoot a limit by the few requests in flight at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.core.cache import cache

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


def quota_admit(*, tenant: Tenant, now: datetime, count: int) -> Admission:
    """Count ``count`` creates against the tenant's quotas at once (one counter update per
    quota, whatever ``count``); the first ones up to each limit are admitted."""
    burst = _fitting(f"quota:active:{tenant.pk}", count, tenant.max_active_timers, lambda: _active_count(tenant))
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    daily = _fitting(
        f"quota:daily:{tenant.pk}:{day_start:%Y%m%d}",
        burst,
        tenant.max_creates_per_day,
        lambda: _created_since(tenant, day_start),
    )
    return Admission(count=count, burst=burst, daily=daily)


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
