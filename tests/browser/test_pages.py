"""The operator's pages in a real browser: headless Chromium (Debian's package) against gunicorn
as ``make run`` starts it, driven over the DevTools protocol by playwright (its own browsers are
never downloaded: ``executable_path`` is /usr/bin/chromium, installed by scripts/test-services.sh).

It logs in to the admin as a superuser and opens the dashboard, the timer list, one timer, the
front page, the browsable API, /api/docs/ (until Swagger UI has rendered every operation) and
/api/redoc/ (until Redoc has). It fails if any page asked for a URL outside 127.0.0.1 (the docs
must work offline), answered >= 400, logged a console error or a JavaScript exception, or is a
Django error page. Each page's screenshot is kept under MINOOTS_DATA_DIR/screenshots/<database>/
and listed at the end of the run.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone

from tests.browser.conftest import SAVED
from tests.factories import make_tenant, make_timer, schedule_timer
from tests.processes import PYTHON, ROOT, Processes
from timers.models import TimerStatus

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.e2e,
    pytest.mark.once_on_sqlite(reason="the pages a browser renders are the same on either database"),
]

CHROMIUM = os.environ.get("MINOOTS_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "browser-test-password"  # noqa: S105 (a throwaway superuser of the test database)
OPERATIONS = 7  # in the OpenAPI schema (tests/timers/test_schema.py ERRORS)
# What a Django error page says (DEBUG is off: the plain 500 / 404 pages; on: the technical ones).
DJANGO_ERROR_MARKS = (
    "Server Error (500)",
    "Traceback (most recent call last)",
    "Page not found (404)",
    "<h1>Not Found</h1>",
)


@dataclass
class Visit:
    """Everything the browser did while the test drove it."""

    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def outside(self) -> list[str]:
        allowed_schemes = ("data", "blob", "about")
        return [
            u
            for u in self.requests
            if urlsplit(u).scheme not in allowed_schemes and urlsplit(u).hostname != "127.0.0.1"
        ]


def _chromium() -> str:
    if not Path(CHROMIUM).exists():
        # Never a skip: a missing browser must fail CI, not pass it quietly.
        pytest.fail(
            f"{CHROMIUM} is missing: scripts/test-services.sh installs Debian's chromium (apt-get install chromium)",
            pytrace=False,
        )
    return CHROMIUM


def _collectstatic(processes: Processes) -> None:
    """What runall and the image do before gunicorn starts: WhiteNoise serves STATIC_ROOT."""
    done = subprocess.run(
        [PYTHON, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env=processes.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _screenshot_dir() -> Path:
    vendor = connection.vendor  # sqlite or postgresql: make test runs both
    path = Path(settings.DATA_DIR) / "screenshots" / vendor
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.png"):
        old.unlink()
    return path


@pytest.mark.timeout(240)
def test_the_operator_pages_render_offline_without_errors(processes: Processes) -> None:
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    # Every database row first: the browser's event loop must not be running while the ORM is used.
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    tenant = make_tenant(id="acme")
    pending = schedule_timer(tenant=tenant, in_=timedelta(hours=1), name="nightly-report")
    now = timezone.now()
    make_timer(
        tenant=tenant,
        status=TimerStatus.SETTLED,
        name="deploy-check",
        fire_at=now - timedelta(minutes=3),
        fired_at=now - timedelta(minutes=3) + timedelta(milliseconds=12),
        settled_at=now - timedelta(minutes=3) + timedelta(milliseconds=180),
        labels={"team": "ci"},
    )
    make_timer(
        tenant=tenant,
        status=TimerStatus.FAILED,
        name="webhook-down",
        fire_at=now - timedelta(minutes=1),
        fired_at=now - timedelta(minutes=1),
        settled_at=now,
        failure_reason="actions failed: notify",
    )
    shots = _screenshot_dir()
    _collectstatic(processes)
    _, base = processes.web()

    visit = Visit()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=FLAGS)
        context = browser.new_context(viewport={"width": 1366, "height": 900})
        context.on("request", lambda request: visit.requests.append(request.url))
        page = context.new_page()

        def console(msg: Any) -> None:
            if msg.type == "error":
                visit.errors.append(f"console error on {page.url}: {msg.text} ({msg.location.get('url')})")

        page.on("console", console)
        page.on("pageerror", lambda exc: visit.errors.append(f"javascript: {exc}"))
        page.on(
            "response",
            lambda r: visit.errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None,
        )

        def open_page(name: str, path: str, ready: Callable[[Any], None] | None = None) -> str:
            response = page.goto(f"{base}{path}", wait_until="load")
            assert response is not None, path
            assert response.status < 400, f"{path}: HTTP {response.status}"
            if ready is not None:
                ready(page)
            page.wait_for_load_state("networkidle")
            html = page.content()
            for mark in DJANGO_ERROR_MARKS:
                assert mark not in html, f"{path} is an error page ({mark!r})"
            shot = shots / f"{len(SAVED) % 100:02d}-{name}.png"
            page.screenshot(path=str(shot), full_page=True)
            SAVED.append(shot)
            return html

        open_page("front-page", "/")
        page.goto(f"{base}/admin/login/?next=/admin/")
        page.fill("#id_username", "operator")
        page.fill("#id_password", PASSWORD)
        with page.expect_navigation():
            page.click("input[type=submit], button[type=submit]")
        assert urlsplit(page.url).path == "/admin/", page.url

        open_page("admin-dashboard", "/admin/")
        listing = open_page("admin-timer-list", "/admin/timers/timer/")
        assert "nightly-report" in listing and "deploy-check" in listing and "webhook-down" in listing
        detail = open_page("admin-timer", f"/admin/timers/timer/{pending.id}/change/")
        assert "nightly-report" in detail
        browsable = open_page("browsable-api-timer", f"/api/timers/{pending.id}?tenant=acme")
        assert f"/api/timers/{pending.id}/events" in browsable

        def swagger_rendered(p: Any) -> None:
            p.wait_for_function(f"document.querySelectorAll('.opblock').length >= {OPERATIONS}", timeout=30_000)

        docs = open_page("api-docs-swagger", "/api/docs/", swagger_rendered)
        assert "Create a timer" in docs and "Reschedule a pending timer" in docs

        def redoc_rendered(p: Any) -> None:
            p.wait_for_function(
                f"document.querySelectorAll('[data-section-id^=\"operation/\"]').length >= {OPERATIONS}",
                timeout=30_000,
            )

        redoc = open_page("api-docs-redoc", "/api/redoc/", redoc_rendered)
        assert "Follow timer events" in redoc
        browser.close()

    assert visit.requests, "the browser made no request"
    problems = [f"outside 127.0.0.1: {url}" for url in sorted(set(visit.outside()))] + visit.errors
    assert not problems, "\n".join(problems)
