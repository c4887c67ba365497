"""Operational endpoints: /healthz (liveness), /readyz (readiness) and /metrics (Prometheus).

They need no credentials of the API: /healthz and /readyz reveal only which dependency is
down (never a URL or a message from it); /metrics is guarded by its own bearer token, or by a
loopback-only rule when no token is configured.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CONTENT_TYPE_LATEST

from minoots_project.celery import app
from timers.api.errors import json_error, mark_logged
from timers.metrics import render_latest

log = logging.getLogger(__name__)

# Once every migration is applied in this process, it stays so until the next deploy (which
# restarts the process): skip re-reading the migration files on every probe.
_migrations_applied = False

_ALLOWED = ("GET", "HEAD")

View = Callable[[HttpRequest], HttpResponse]


def read_only(view: View) -> View:
    """GET and HEAD only; any other method is a JSON 405 in the API's error shape. Exempt
    from CSRF: nothing here changes state, and a POST must meet the 405, not Django's CSRF
    failure page (an HTML 403)."""

    @wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
        if request.method not in _ALLOWED:
            response = json_error(
                f"Method {str(request.method)[:20]} not allowed; use GET",
                405,
                {"allowed": list(_ALLOWED)},
            )
            response["Allow"] = ", ".join(_ALLOWED)
            return response
        return view(request)

    return csrf_exempt(never_cache(wrapper))


@read_only
def healthz(request: HttpRequest) -> HttpResponse:
    """The process answers. Checks nothing else, so a broken dependency never restarts it."""
    return JsonResponse({"status": "ok"})


def check_database() -> str | None:
    """None when the database answers a query, else a short reason."""
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
    except Exception as exc:
        return type(exc).__name__
    return None


def check_migrations() -> str | None:
    """None when no migration is left to apply."""
    global _migrations_applied
    if _migrations_applied:
        return None
    try:
        connection = connections[DEFAULT_DB_ALIAS]
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:
        return type(exc).__name__
    if plan:
        return f"{len(plan)} unapplied"
    _migrations_applied = True
    return None


def check_broker() -> str | None:
    """None when the Celery broker accepts a connection within MINOOTS_READYZ_TIMEOUT."""
    timeout = settings.MINOOTS_READYZ_TIMEOUT
    try:
        with app.connection_for_write(connect_timeout=timeout) as conn:
            # kombu-stubs say int; kombu adds it to time() as seconds, so a float works.
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)  # type: ignore[arg-type]
            client = getattr(conn.default_channel, "client", None)
            if client is not None and hasattr(client, "ping"):
                client.ping()  # Redis: a real round trip, not just an open socket
    except Exception as exc:
        return type(exc).__name__
    return None


@read_only
def readyz(request: HttpRequest) -> HttpResponse:
    """200 when the database, its migrations and the broker are fine; else 503 naming what is down."""
    checks: dict[str, str | None] = {"database": check_database()}
    checks["migrations"] = check_migrations() if checks["database"] is None else "database down"
    checks["broker"] = check_broker()
    report = {name: ("ok" if problem is None else f"down: {problem}") for name, problem in checks.items()}
    down = [name for name, problem in checks.items() if problem is not None]
    if not down:
        return JsonResponse({"status": "ready", "checks": report})
    log.warning("not ready: %s", ", ".join(f"{n} ({checks[n]})" for n in down), extra={"event": "not_ready"})
    body: dict[str, Any] = {
        "message": f"Not ready: {', '.join(down)} down",
        "details": {"status": "unavailable", "down": down, "checks": report},
    }
    response = JsonResponse(body, status=503)
    response["Retry-After"] = "5"
    # Logged once above as a warning: keep Django from adding an ERROR line for every probe.
    return mark_logged(response)


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def metrics_allowed(*, authorization: str, remote_addr: str, token: str, proxied: bool = False) -> bool:
    """With a configured token: ``Authorization: Bearer <token>``. Without: loopback clients
    only, and not through a reverse proxy (behind one on the same host every client would
    look like loopback)."""
    if token:
        scheme, _, given = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    return _loopback(remote_addr) and not proxied


@read_only
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, merged across web, worker and beat processes."""
    token = settings.MINOOTS_METRICS_TOKEN
    if not metrics_allowed(
        authorization=request.headers.get("Authorization", ""),
        remote_addr=request.META.get("REMOTE_ADDR", ""),
        token=token,
        proxied=any(h in request.headers for h in ("X-Forwarded-For", "Forwarded", "X-Real-IP")),
    ):
        if token:
            response = JsonResponse({"message": "Unauthorized", "details": None}, status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        return JsonResponse(
            {"message": "Forbidden: set MINOOTS_METRICS_TOKEN to scrape from another host", "details": None},
            status=403,
        )
    return HttpResponse(render_latest(), content_type=CONTENT_TYPE_LATEST)
