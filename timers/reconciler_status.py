"""The reconciler's last pass, kept in the cache for the admin dashboard.

``reconcile`` (the beat-driven task) records each pass; the dashboard reads it back. The last
pass that did any work (armed, re-published, repaired or recovered something) is kept too,
so a repair stays visible after quiet passes follow it. Best effort on both sides: a cache
that is down costs the dashboard this panel, never the reconciler its pass.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.core.cache import cache
from django.utils import timezone

log = logging.getLogger(__name__)

LAST_PASS_KEY = "reconciler:last_pass"  # noqa: S105 (a cache key, not a password)
LAST_WORK_KEY = "reconciler:last_work"
# Long enough to outlive any beat interval; a missing key then means beat stopped long ago.
_TTL_SECONDS = 7 * 24 * 3600
_WORK_FIELDS = ("armed", "ticksRepublished", "repaired", "runsRecovered")


def reconcile_pass_record(*, report: dict[str, Any], at: datetime | None = None) -> None:
    """Remember ``report`` (``ReconcileReport.as_dict()``) as the last pass, at ``at`` (now)."""
    entry = {**report, "at": (at or timezone.now()).isoformat()}
    values: dict[str, Any] = {LAST_PASS_KEY: entry}
    if any(report.get(name) for name in _WORK_FIELDS):
        values[LAST_WORK_KEY] = entry
    try:
        cache.set_many(values, timeout=_TTL_SECONDS)
    except Exception:
        log.debug("reconciler status not recorded: cache unavailable", exc_info=True)


def reconcile_pass_last() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(last pass, last pass that did work)``, each None when not known. Raises when the
    cache cannot be read (the caller says so)."""
    found = cache.get_many([LAST_PASS_KEY, LAST_WORK_KEY])
    return found.get(LAST_PASS_KEY), found.get(LAST_WORK_KEY)
