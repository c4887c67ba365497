"""The fine wheel: one ``fire_due`` tick per MINOOTS_TICK bucket, published with an ETA.

A tick claims *every* due timer, so one tick per bucket is enough and duplicates are harmless.
De-duplication is cheap and best-effort: a marker per bucket in the cache (Redis ``SET NX``
in production). When a marker outlives its message (Redis flushed, worker killed) the
reconciler's repair step publishes a fresh tick.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from timers.publishing import FIRE_DUE, publish

log = logging.getLogger(__name__)

_MARKER_PREFIX = "tick:"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def tick_ms() -> int:
    return max(1, int(settings.MINOOTS_TICK.total_seconds() * 1000))


def bucket_of(moment: datetime) -> int:
    # Integer arithmetic on timedeltas: float timestamps would misplace instants near an edge.
    return (moment - _EPOCH) // timedelta(milliseconds=tick_ms())


def next_bucket_start(bucket: int) -> datetime:
    """The first instant after ``bucket`` (buckets are half-open: [start, next start))."""
    return _EPOCH + timedelta(milliseconds=(bucket + 1) * tick_ms())


def _marker_ttl() -> int:
    return int(settings.MINOOTS_ARM_HORIZON.total_seconds()) + 60


def ensure_tick(fire_at: datetime) -> bool:
    """Make sure a tick covers ``fire_at``'s bucket. Return True if this call published one.

    Never raises: the timer is already safe in the database, and the reconciler repairs a tick
    that could not be published (broker down).
    """
    bucket = bucket_of(fire_at)
    try:
        if not cache.add(f"{_MARKER_PREFIX}{bucket}", 1, timeout=_marker_ttl()):
            return False
    except Exception:  # cache down: publish anyway, a duplicate tick is harmless
        log.warning("tick marker cache unavailable", exc_info=True)
    return publish_tick(bucket=bucket, eta=fire_at)


def ensure_ticks(fire_ats: list[datetime]) -> int:
    """ensure_tick for many buckets, with one cache round trip to skip those already marked."""
    by_key: dict[str, datetime] = {}
    for f in sorted(fire_ats):
        by_key.setdefault(f"{_MARKER_PREFIX}{bucket_of(f)}", f)
    try:
        present = cache.get_many(list(by_key))
    except Exception:
        present = {}
    return sum(1 for key, f in by_key.items() if key not in present and ensure_tick(f))


def republish_tick(*, bucket: int, eta: datetime) -> bool:
    """Publish the bucket's tick again (it ran early) and mark it, so the reconciler does not
    take the bucket for one whose tick was lost."""
    try:
        cache.set(f"{_MARKER_PREFIX}{bucket}", 1, timeout=_marker_ttl())
    except Exception:
        log.warning("tick marker cache unavailable", exc_info=True)
    return publish_tick(bucket=bucket, eta=eta)


def forget_tick(bucket: int) -> None:
    """Drop the bucket's marker once its tick ran, so a later timer in the bucket publishes again."""
    try:
        cache.delete(f"{_MARKER_PREFIX}{bucket}")
    except Exception:
        log.warning("tick marker cache unavailable", exc_info=True)


def publish_tick(*, bucket: int | None, eta: datetime | None) -> bool:
    """Publish ``fire_due`` (immediately when ``eta`` is None or past). False if the broker refused."""
    try:
        publish(FIRE_DUE, kwargs={"bucket": bucket}, eta=eta if eta is not None and eta > timezone.now() else None)
    except Exception:
        log.error("could not publish fire_due tick; the reconciler will repair it", exc_info=True)
        return False
    return True
