"""The operator dashboard (the admin's front page): its numbers against the database."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from actions.models import RunStatus
from minoots_project import admin_site
from tests.factories import make_run, make_tenant, make_timer
from timers import tasks
from timers.dashboard import COUNT_CAP, capped_count
from timers.models import Timer, TimerStatus

pytestmark = pytest.mark.django_db


def fired(tenant: Any, *, ago: timedelta, lateness_ms: int, status: str = TimerStatus.SETTLED, **fields: Any) -> Timer:
    now = timezone.now()
    fire_at = now - ago
    return make_timer(
        tenant=tenant,
        status=status,
        fire_at=fire_at,
        fired_at=fire_at + timedelta(milliseconds=lateness_ms),
        lateness_ms=lateness_ms,
        settled_at=fire_at + timedelta(milliseconds=lateness_ms + 5),
        **fields,
    )


@pytest.fixture
def known_data(db: Any) -> dict[str, Any]:
    acme, globex = make_tenant(id="acme"), make_tenant(id="globex")
    now = timezone.now()
    for i in range(2):
        make_timer(tenant=acme, status=TimerStatus.SCHEDULED, name=f"later{i}", fire_at=now + timedelta(minutes=30))
    make_timer(tenant=acme, status=TimerStatus.ARMED, name="soon", fire_at=now + timedelta(minutes=2))
    overdue = make_timer(tenant=acme, status=TimerStatus.ARMED, name="stuck", fire_at=now - timedelta(seconds=60))
    for late in (10, 20, 30, 400):
        fired(acme, ago=timedelta(minutes=10), lateness_ms=late)
    failed = fired(
        acme, ago=timedelta(hours=2), lateness_ms=50, status=TimerStatus.FAILED, failure_reason="actions failed: hook"
    )
    for _ in range(2):
        make_timer(tenant=acme, status=TimerStatus.CANCELLED, fire_at=now + timedelta(hours=3), cancelled_at=now)
    fired(globex, ago=timedelta(minutes=5), lateness_ms=1000)
    fired(globex, ago=timedelta(days=3), lateness_ms=9999)  # outside every window
    make_run(
        timer=failed,
        action_id="hook",
        status=RunStatus.FAILED,
        attempts=3,
        last_error="HTTP 500 from the receiver",
        finished_at=now - timedelta(hours=1),
    )
    retrying_timer = make_timer(tenant=acme, status=TimerStatus.FIRED, name="retrying", fired_at=now, lateness_ms=1)
    make_run(
        timer=retrying_timer,
        action_id="flaky",
        status=RunStatus.PENDING,
        attempts=2,
        next_attempt_at=now + timedelta(seconds=30),
        last_error="connection refused",
    )
    return {"acme": acme, "globex": globex, "overdue": overdue}


def test_admin_without_a_slash_redirects_to_the_dashboard(client: Any) -> None:
    response = Client().get("/admin")
    assert response.status_code in (301, 308)
    assert response["Location"] == "/admin/"


def test_dashboard_is_for_staff_only(db: Any) -> None:
    response = Client().get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_dashboard_is_the_branded_admin_front_page(admin_browser: Client, no_worker_ping: list[str]) -> None:
    page = admin_browser.get("/admin/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "MINOOTS" in html and "Operator dashboard" in html
    assert "Django administration" not in html
    assert "/static/minoots/admin.css" in html
    # Nothing is loaded from elsewhere: no CDN, no script of a chart library.
    for attribute in ('src="http', "src='http", 'href="http', "href='http", "//cdn"):
        assert attribute not in html


def test_dashboard_numbers_match_the_database(
    admin_browser: Client, known_data: dict[str, Any], no_worker_ping: list[str]
) -> None:
    page = admin_browser.get("/admin/")
    assert page.status_code == 200
    d = page.context["dashboard"]
    now = timezone.now()
    for status in TimerStatus:
        assert d["statuses"][status].value == Timer.objects.filter(status=status).count(), status
    assert d["statuses"]["armed"].value == 2  # soon and stuck
    pending = Timer.objects.filter(status__in=["scheduled", "armed"], fire_at__gte=now - timedelta(seconds=5))
    assert d["due_5m"].value == pending.filter(fire_at__lt=now + timedelta(minutes=5)).count() == 1
    assert d["due_1h"].value == pending.filter(fire_at__lt=now + timedelta(hours=1)).count() == 3
    assert d["fired_1h"].value == Timer.objects.filter(fired_at__gte=now - timedelta(hours=1)).count() == 6
    assert d["fired_24h"].value == Timer.objects.filter(fired_at__gte=now - timedelta(hours=24)).count() == 7
    (hour_label, hour), (day_label, day) = d["lateness"]
    # Last hour: 1 (the fired retrying timer), 10, 20, 30, 400, 1000 -> nearest-rank percentiles.
    assert (hour.fires, hour.p50, hour.p95, hour.p99, hour.max) == (6, 20, 1000, 1000, 1000)
    assert (day.fires, day.p50, day.max) == (7, 30, 1000)
    armed, scheduled = d["overdue"]
    assert (armed.status, armed.count.value, armed.oldest.pk) == ("armed", 1, known_data["overdue"].pk)
    assert 60_000 <= armed.oldest_late_ms < 70_000
    assert scheduled.count.value == 0 and scheduled.oldest is None
    assert d["runs_retrying_count"].value == 1 and d["runs_retrying"][0].action_id == "flaky"
    assert d["runs_failed_count"].value == 1 and d["runs_failed"][0].last_error == "HTTP 500 from the receiver"
    html = page.content.decode()
    assert "HTTP 500 from the receiver" in html and "connection refused" in html
    assert 'data-status="settled">6<' in html  # 4 of acme, 2 of globex
    assert "<svg" in html and "Fires and lateness per minute" in html


def test_dashboard_for_one_tenant_counts_only_its_timers(
    admin_browser: Client, known_data: dict[str, Any], no_worker_ping: list[str]
) -> None:
    d = admin_browser.get("/admin/?tenant=globex").context["dashboard"]
    assert d["tenant"].id == "globex"
    assert d["statuses"]["settled"].value == Timer.objects.filter(tenant_id="globex", status="settled").count() == 2
    assert d["statuses"]["armed"].value == 0
    assert d["fired_1h"].value == 1
    hour = d["lateness"][0][1]
    assert (hour.fires, hour.p50, hour.max) == (1, 1000, 1000)
    assert d["runs_failed_count"].value == 0
    acme = admin_browser.get("/admin/?tenant=acme").context["dashboard"]
    assert acme["lateness"][0][1].p50 == 20  # 1, 10, 20, 30, 400
    assert acme["runs_failed_count"].value == 1


def test_dashboard_names_an_unknown_tenant_and_shows_everything(
    admin_browser: Client, known_data: dict[str, Any], no_worker_ping: list[str]
) -> None:
    page = admin_browser.get("/admin/?tenant=nope")
    assert page.context["dashboard"]["tenant"] is None
    assert "No tenant “nope”" in page.content.decode()


def test_per_minute_chart_has_a_bar_per_minute_with_fires(
    admin_browser: Client, known_data: dict[str, Any], no_worker_ping: list[str]
) -> None:
    html = admin_browser.get("/admin/").content.decode()
    # Fires 5 and 10 minutes ago (plus the retrying timer's, now): three minutes with bars.
    assert html.count('fill="#90caf9"><title>') == 3
    assert "4 fired; lateness p50 20 ms" in html


def test_reconciler_pass_recorded_by_the_task_is_shown(
    admin_browser: Client, known_data: dict[str, Any], no_worker_ping: list[str], broker: Any
) -> None:
    report = tasks.reconcile()
    assert report["repaired"] == 1  # the overdue armed timer got a tick
    page = admin_browser.get("/admin/")
    reconciler = page.context["dashboard"]["reconciler"]
    assert reconciler["known"] and reconciler["last"]["repaired"] == 1
    assert reconciler["last_work"]["repaired"] == 1
    assert not reconciler["stale"]
    assert "Last pass with work" in page.content.decode()


def test_dashboard_renders_when_the_broker_is_down(
    admin_browser: Client, known_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin_site, "check_broker", lambda: "OperationalError")

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the worker ping must not be tried without a broker")

    monkeypatch.setattr(admin_site, "_workers_answering", never)
    monkeypatch.setattr(admin_site, "_cache_uses_broker", lambda: True)
    page = admin_browser.get("/admin/")
    assert page.status_code == 200
    health = {h.name: h for h in page.context["dashboard"]["health"]}
    assert health["Database"].ok is True
    assert health["Broker"].ok is False and "OperationalError" in health["Broker"].detail
    assert health["Workers"].ok is None and "broker is down" in health["Workers"].detail
    assert health["Reconciler"].ok is None


def test_worker_ping_names_the_workers_and_warns_without_a_firing_worker(
    admin_browser: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin_site, "check_broker", lambda: None)
    monkeypatch.setattr(admin_site, "_workers_answering", lambda: ["worker@a"])
    health = {h.name: h for h in admin_browser.get("/admin/").context["dashboard"]["health"]}
    assert health["Workers"].ok is True and health["Workers"].detail == "worker@a"
    assert health["Firing worker"].ok is False


def test_worker_ping_is_bounded_and_cached(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    from django.core.cache import cache

    cache.delete_many([admin_site.WORKERS_KEY, admin_site.KNOWN_WORKERS_KEY])
    calls: list[tuple[float, int | None]] = []

    class Inspect:
        def ping(self) -> dict[str, Any]:
            return {"firing@x": {"ok": "pong"}, "worker@x": {"ok": "pong"}}

    def inspect(timeout: float, limit: int | None) -> Inspect:
        calls.append((timeout, limit))
        return Inspect()

    from minoots_project.celery import app as celery_app

    monkeypatch.setattr(celery_app.control, "inspect", inspect)
    assert admin_site._workers_answering() == ["firing@x", "worker@x"]
    assert admin_site._workers_answering() == ["firing@x", "worker@x"]  # cached: no second ping
    assert calls == [(admin_site.WORKER_PING_TIMEOUT, None)]
    cache.delete(admin_site.WORKERS_KEY)
    admin_site._workers_answering()
    # Once two workers were seen, the ping stops waiting when two have answered.
    assert calls[-1] == (admin_site.WORKER_PING_TIMEOUT, 2)
    cache.delete_many([admin_site.WORKERS_KEY, admin_site.KNOWN_WORKERS_KEY])


@pytest.mark.postgres_only("the planner's estimate")
def test_a_status_beyond_the_exact_count_shows_the_planners_estimate(
    known_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from timers import dashboard

    monkeypatch.setattr(dashboard, "EXACT_STATUS_COUNT", 2)
    with connection.cursor() as cur:
        cur.execute("ANALYZE timers_timer")  # the statistics autovacuum keeps in production
    counts = dashboard.status_counts(tenant_id=None)
    assert counts["settled"].estimated and counts["settled"].value >= 3
    assert str(counts["settled"]).startswith("≈ ")
    assert not counts["failed"].estimated and counts["failed"].value == 1


@pytest.mark.postgres_only("the planner's estimate")
def test_a_status_the_planner_puts_beyond_the_exact_count_is_not_counted(
    known_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from timers import dashboard

    monkeypatch.setattr(dashboard, "EXACT_STATUS_COUNT", 2)
    with connection.cursor() as cur:
        cur.execute("ANALYZE timers_timer")
    with CaptureQueriesContext(connection) as queries:
        counts = dashboard.status_counts(tenant_id=None)
    sqls = [q["sql"] for q in queries.captured_queries]
    assert len(sqls) == 2, sqls  # the estimates in one statement, the small counts in another
    (counted,) = [sql for sql in sqls if not sql.startswith("EXPLAIN")]
    assert counts["settled"].estimated
    assert "'settled'" not in counted  # only EXPLAINed
    assert "'failed'" in counted and counts["failed"] == dashboard.Count(1)  # small: counted exactly


@pytest.mark.postgres_only("the planner's estimate")
def test_no_overdue_timer_is_an_exact_zero_whatever_the_estimates(
    known_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from timers import dashboard

    monkeypatch.setattr(dashboard, "_estimates", lambda querysets: [10**9] * len(querysets))
    armed, scheduled = dashboard.overdue(tenant_id=None, now=timezone.now())
    assert (scheduled.count.value, scheduled.count.estimated, scheduled.oldest) == (0, False, None)
    assert armed.oldest == known_data["overdue"] and armed.count.estimated  # the estimate, labelled
    assert str(dashboard.status_counts(tenant_id="acme")["armed"]) == "≈ 1,000,000,000"


@pytest.mark.postgres_only("Postgres plans")
@pytest.mark.parametrize(
    ("where", "indexes"),
    [
        # GET /api/timers?status=… of one tenant, and the admin's status filter over every tenant:
        # the page in index order, no sort of every timer of the status (the status index,
        # filtering the tenant, when the tenant holds most of the table, as here).
        (
            "tenant_id = 'acme' AND status = 'settled' ORDER BY created_at DESC, id DESC",
            ("timer_tenant_status_created", "timer_status_created"),
        ),
        ("status = 'failed' ORDER BY created_at DESC, id DESC", ("timer_status_created",)),
        # GET /api/timers?name=…
        ("tenant_id = 'acme' AND name = 'soon' ORDER BY created_at DESC, id DESC", ("timer_tenant_name",)),
        # The dashboard's overdue timers of one tenant: a pending index in fire_at order (the
        # global one when the tenant holds most of the table), not every armed timer of the tenant.
        (
            "tenant_id = 'acme' AND status = 'armed' AND fire_at < now() ORDER BY fire_at",
            ("timer_tenant_pending_fire_at", "timer_pending_fire_at"),
        ),
        # The reconciler's arm step.
        ("status = 'scheduled' AND fire_at <= now() ORDER BY fire_at", ("timer_pending_fire_at",)),
    ],
)
def test_list_dashboard_and_reconcile_reads_have_an_index_in_their_order(
    known_data: dict[str, Any], where: str, indexes: tuple[str, ...]
) -> None:
    with connection.cursor() as cur:
        cur.execute("ANALYZE timers_timer")
        # A handful of rows: a scan and a sort would win anyway; what is left is the index
        # that has the rows in the order asked.
        for plan_kind in ("seqscan", "bitmapscan", "sort"):
            cur.execute(f"SET LOCAL enable_{plan_kind} = off")
        cur.execute(f"EXPLAIN (FORMAT JSON) SELECT id FROM timers_timer WHERE {where} LIMIT 51")
        (plan,) = cur.fetchone()
    top = plan[0]["Plan"]["Plans"][0]  # under the Limit
    assert top["Node Type"] in ("Index Scan", "Index Only Scan") and top["Index Name"] in indexes, top


def test_counts_stop_at_the_cap(known_data: dict[str, Any]) -> None:
    assert str(capped_count(Timer.objects.all(), cap=3)) == "3+"
    assert capped_count(Timer.objects.filter(status="failed")).value == 1
    assert COUNT_CAP >= 10_000
