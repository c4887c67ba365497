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


def _estimate(key: str, seed: Callable[[], int]) -> int:
    """The counter after counting this create (seeding it from ``seed()`` when missing)."""
    try:
        value = cache.incr(key)
    except ValueError:  # missing or expired
        value = seed() + 1
        cache.set(key, value, timeout=SEED_TTL)
    except Exception:  # cache down: count exactly
        value = seed() + 1
    return int(value)


def quota_check_and_count(*, tenant: Tenant, now: datetime) -> None:
    """Count one create against the tenant's quotas; raise QuotaExhausted when over."""
    active_key = f"quota:active:{tenant.pk}"
    if _estimate(active_key, lambda: _active_count(tenant)) > tenant.max_active_timers:
        exact = _active_count(tenant)
        _reseed(active_key, exact)
        if exact >= tenant.max_active_timers:
            raise QuotaExhausted("burst", tenant.max_active_timers)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    daily_key = f"quota:daily:{tenant.pk}:{day_start:%Y%m%d}"
    if _estimate(daily_key, lambda: _created_since(tenant, day_start)) > tenant.max_creates_per_day:
        exact = _created_since(tenant, day_start)
        _reseed(daily_key, exact)
        if exact >= tenant.max_creates_per_day:
            raise QuotaExhausted("daily", tenant.max_creates_per_day)


def _reseed(key: str, value: int) -> None:
    try:
        cache.set(key, value, timeout=SEED_TTL)
    except Exception:
        log.warning("quota counter cache unavailable", exc_info=True)
