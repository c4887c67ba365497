"""The MINOOTS admin: its front page is the operator dashboard (staff only).

``MinootsAdminSite`` replaces Django's default site (``MinootsAdminConfig`` in
``minoots_project.apps``), so every ``@admin.register`` lands here. The dashboard reads only
bounded, indexed queries (``timers.dashboard``, ``actions.dashboard``) and bounded health
checks: the database and broker pings of ``/readyz``, a ``celery inspect ping`` of at most
``WORKER_PING_TIMEOUT`` (it returns as soon as the workers seen last time answered; its
answer is cached for ``WORKER_PING_CACHE`` seconds, so reloading the page does not ask again), and the reconciler's last pass as the beat task recorded it.
With Redis down, nothing that needs Redis is tried past the broker ping: the page still renders.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.core.cache import cache
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from actions import dashboard as run_stats
from minoots_project.celery import app as celery_app
from minoots_project.health import check_broker, check_database
from minoots_project.svgchart import lateness_chart
from timers import dashboard as stats
from timers.models import Tenant
from timers.reconciler_status import reconcile_pass_last
from timers.selectors import tenant_get
from timers.timefmt import ms_text, utc_ms

log = logging.getLogger(__name__)

WORKER_PING_TIMEOUT = 1.0
WORKER_PING_CACHE = 10
WORKERS_KEY = "dashboard:workers"
KNOWN_WORKERS_KEY = "dashboard:workers_known"
TENANTS_LISTED = 500


@dataclass(frozen=True)
class Health:
    name: str
    ok: bool | None  # None: unknown (could not be asked)
    detail: str


def _workers_answering() -> list[str]:
    """Names of the Celery workers that answered a ping, cached briefly (see module docstring).

    The ping stops waiting once as many workers answered as last time (``limit``), so with
    every worker up it takes a round trip, not the whole timeout."""
    cached = cache.get(WORKERS_KEY)
    if isinstance(cached, list):
        return cached
    known = cache.get(KNOWN_WORKERS_KEY)
    limit = len(known) if isinstance(known, list) and known else None
    replies = celery_app.control.inspect(timeout=WORKER_PING_TIMEOUT, limit=limit).ping() or {}
    names = sorted(replies)
    cache.set_many({WORKERS_KEY: names}, timeout=WORKER_PING_CACHE)
    if names:
        cache.set(KNOWN_WORKERS_KEY, names, timeout=24 * 3600)
    return names


def _cache_uses_broker() -> bool:
    return "redis" in str(settings.CACHES["default"]["BACKEND"]).lower()


def health(now: datetime) -> tuple[list[Health], dict[str, Any]]:
    """The health rows, and the reconciler's last pass (for its own panel)."""
    rows = []
    database = check_database()
    rows.append(Health("Database", database is None, "answers" if database is None else f"down: {database}"))
    broker = check_broker()
    rows.append(Health("Broker", broker is None, "answers" if broker is None else f"down: {broker}"))
    if broker is not None:
        rows.append(Health("Workers", None, "unknown: the broker is down"))
    else:
        try:
            names = _workers_answering()
        except Exception as exc:
            rows.append(Health("Workers", None, f"unknown: {type(exc).__name__}"))
        else:
            firing = [n for n in names if n.startswith("firing@")]
            detail = ", ".join(names) if names else f"none answered within {WORKER_PING_TIMEOUT:g} s"
            rows.append(Health("Workers", bool(names), detail))
            if names and not firing:
                rows.append(Health("Firing worker", False, "no worker named firing@… answered: nothing fires"))
    reconciler: dict[str, Any] = {"known": False}
    if broker is not None and _cache_uses_broker():
        reconciler["error"] = "unknown: the cache (Redis) is down"
    else:
        try:
            last, last_work = reconcile_pass_last()
        except Exception as exc:
            reconciler["error"] = f"unknown: {type(exc).__name__}"
        else:
            reconciler.update(_reconciler_panel(last, last_work, now))
    if reconciler.get("known"):
        rows.append(Health("Reconciler", not reconciler["stale"], f"last pass {reconciler['age']} ago"))
    else:
        rows.append(Health("Reconciler", None, reconciler.get("error", "no pass recorded yet (is beat running?)")))
    return rows, reconciler


def _reconciler_panel(last: dict[str, Any] | None, last_work: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    if last is None:
        return {"known": False}
    at = datetime.fromisoformat(last["at"])
    age = now - at
    interval: timedelta = settings.MINOOTS_RECONCILE_INTERVAL
    panel: dict[str, Any] = {
        "known": True,
        "at": utc_ms(at),
        "age": ms_text(age // timedelta(milliseconds=1)),
        "stale": age > 3 * interval + timedelta(seconds=5),
        "interval": ms_text(interval // timedelta(milliseconds=1)),
        "last": last,
    }
    if last_work is not None:
        panel["last_work"] = last_work
        panel["last_work_at"] = utc_ms(datetime.fromisoformat(last_work["at"]))
    return panel


def dashboard_context(request: HttpRequest) -> dict[str, Any]:
    """Everything the dashboard shows, for every tenant or the one of ``?tenant=``."""
    now = timezone.now()
    wanted = request.GET.get("tenant", "").strip()
    tenant = tenant_get(tenant_id=wanted) if wanted else None
    tenant_id = tenant.id if tenant is not None else None
    hour, day = now - timedelta(hours=1), now - timedelta(hours=24)
    per_minute = stats.lateness_per_minute(
        tenant_id=tenant_id, since=now.replace(second=0, microsecond=0) - timedelta(minutes=59), until=now
    )
    retrying_count, retrying = run_stats.runs_retrying(tenant_id=tenant_id)
    failed_count, failed = run_stats.runs_failed_since(tenant_id=tenant_id, since=day)
    health_rows, reconciler = health(now)
    return {
        "now": utc_ms(now),
        "tenant": tenant,
        "tenant_unknown": wanted if wanted and tenant is None else "",
        "tenants": list(Tenant.objects.order_by("id").values_list("id", flat=True)[:TENANTS_LISTED]),
        "statuses": stats.status_counts(tenant_id=tenant_id),
        "due_5m": stats.due_count(tenant_id=tenant_id, now=now, within=timedelta(minutes=5)),
        "due_1h": stats.due_count(tenant_id=tenant_id, now=now, within=timedelta(hours=1)),
        "fired_1h": stats.fired_count(tenant_id=tenant_id, since=hour),
        "fired_24h": stats.fired_count(tenant_id=tenant_id, since=day),
        "lateness": [
            ("last hour", stats.lateness(tenant_id=tenant_id, since=hour, until=now)),
            ("last 24 h", stats.lateness(tenant_id=tenant_id, since=day, until=now)),
        ],
        "chart": lateness_chart(per_minute, end=now),
        "overdue": stats.overdue(tenant_id=tenant_id, now=now),
        "repair_grace": ms_text(settings.MINOOTS_REPAIR_GRACE // timedelta(milliseconds=1)),
        "runs_running": run_stats.runs_running(tenant_id=tenant_id),
        "runs_retrying_count": retrying_count,
        "runs_retrying": retrying,
        "runs_failed_count": failed_count,
        "runs_failed": failed,
        "health": health_rows,
        "reconciler": reconciler,
        "count_cap": f"{stats.COUNT_CAP:,}",
        "exact_status_count": f"{stats.EXACT_STATUS_COUNT:,}",
    }


class MinootsAdminSite(admin.AdminSite):
    site_header = "MINOOTS"
    site_title = "MINOOTS admin"
    index_title = "Operator dashboard"
    index_template = "admin/minoots/dashboard.html"

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        context = {"dashboard": dashboard_context(request), **(extra_context or {})}
        return super().index(request, extra_context=context)
