"""Timer pages of the admin: UTC to the millisecond, badges, filters, search, no internal fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from tests.factories import make_run, make_tenant, make_timer
from timers.models import Timer, TimerStatus
from timers.timefmt import ms_text, utc_ms

pytestmark = pytest.mark.django_db

LIST = "/admin/timers/timer/"
FIRE_AT = datetime(2026, 12, 1, 19, 40, 12, 345000, tzinfo=UTC)


def change_url(timer: Timer) -> str:
    return f"{LIST}{timer.pk}/change/"


def test_times_are_utc_to_the_millisecond() -> None:
    assert utc_ms(FIRE_AT) == "2026-12-01 19:40:12.345Z"
    assert utc_ms(FIRE_AT.astimezone(timezone.get_fixed_timezone(120))) == "2026-12-01 19:40:12.345Z"
    assert utc_ms(None) == "—"
    assert [ms_text(v) for v in (40, 1250, 200_000, 7_500_000)] == ["40 ms", "1.25 s", "3 min 20 s", "2 h 5 min"]


def test_list_shows_fire_and_fired_times_to_the_millisecond_with_badge_and_lateness(admin_browser: Client) -> None:
    tenant = make_tenant(id="acme")
    make_timer(
        tenant=tenant,
        status=TimerStatus.SETTLED,
        name="ms",
        fire_at=FIRE_AT,
        fired_at=FIRE_AT + timedelta(milliseconds=40),
        lateness_ms=40,
        settled_at=FIRE_AT + timedelta(milliseconds=90),
        created_at=FIRE_AT - timedelta(minutes=1),
    )
    html = admin_browser.get(LIST).content.decode()
    assert "2026-12-01 19:40:12.345Z" in html and "2026-12-01 19:40:12.385Z" in html
    assert "settled 2026-12-01 19:40:12.435Z" in html
    assert '<span class="mn-badge mn-settled">settled</span>' in html
    assert "40 ms" in html and ">acme<" in html


def test_overdue_pending_timer_shows_how_late_it_is(admin_browser: Client) -> None:
    make_timer(tenant=make_tenant(), status=TimerStatus.ARMED, fire_at=timezone.now() - timedelta(seconds=90))
    assert "overdue 1 min 30 s" in admin_browser.get(LIST).content.decode()


def test_failed_timer_page_says_failed_at_with_the_reason_and_never_the_request_hash(admin_browser: Client) -> None:
    timer = make_timer(
        tenant=make_tenant(),
        status=TimerStatus.FAILED,
        fire_at=FIRE_AT,
        fired_at=FIRE_AT,
        lateness_ms=0,
        settled_at=FIRE_AT + timedelta(seconds=3),
        failure_reason="actions failed: notify",
        request_hash="ab" * 32,
    )
    make_run(timer=timer, action_id="notify", status="failed", last_error="HTTP 503", attempts=3)
    html = admin_browser.get(change_url(timer)).content.decode()
    assert "Failed at (UTC)" in html and "2026-12-01 19:40:15.345Z" in html
    assert "Settled at" not in html
    assert "actions failed: notify" in html and "HTTP 503" in html
    assert "ab" * 32 not in html and "request_hash" not in html and "Request hash" not in html


def test_settled_and_cancelled_timers_label_their_end_by_status(admin_browser: Client) -> None:
    tenant = make_tenant()
    settled = make_timer(tenant=tenant, status=TimerStatus.SETTLED, fired_at=FIRE_AT, settled_at=FIRE_AT)
    cancelled = make_timer(
        tenant=tenant, status=TimerStatus.CANCELLED, cancelled_at=FIRE_AT, cancel_reason="no longer needed"
    )
    settled_html = admin_browser.get(change_url(settled)).content.decode()
    assert "Settled at (UTC)" in settled_html and "Failed at" not in settled_html
    assert "Failure reason" not in settled_html
    cancelled_html = admin_browser.get(change_url(cancelled)).content.decode()
    assert "Cancelled at (UTC)" in cancelled_html and "no longer needed" in cancelled_html
    assert "Settled at" not in cancelled_html


@pytest.fixture
def mixed(db: Any) -> dict[str, Timer]:
    acme, globex = make_tenant(id="acme"), make_tenant(id="globex")
    now = timezone.now()
    return {
        "kitchen": make_timer(
            tenant=acme,
            name="oven",
            status=TimerStatus.SCHEDULED,
            fire_at=now + timedelta(days=2),
            labels={"team": "kitchen"},
        ),
        "garden": make_timer(
            tenant=acme,
            name="water",
            status=TimerStatus.ARMED,
            fire_at=now + timedelta(seconds=30),
            labels={"team": "garden"},
        ),
        "globex": make_timer(
            tenant=globex, name="report", status=TimerStatus.CANCELLED, fire_at=now + timedelta(days=5)
        ),
    }


def names(page: Any) -> set[str]:
    return {t.name for t in page.context["cl"].result_list}


def test_filter_by_status_and_tenant(admin_browser: Client, mixed: dict[str, Timer]) -> None:
    assert names(admin_browser.get(f"{LIST}?status__exact=armed")) == {"water"}
    assert names(admin_browser.get(f"{LIST}?tenant__id__exact=globex")) == {"report"}


def test_filter_by_label_key_value(admin_browser: Client, mixed: dict[str, Timer]) -> None:
    page = admin_browser.get(f"{LIST}?label=team:kitchen")
    assert names(page) == {"oven"}
    assert 'value="team:kitchen"' in page.content.decode()  # the typed-in filter keeps its value
    assert names(admin_browser.get(f"{LIST}?label=team:nobody")) == set()


def test_filter_by_fire_at_range(admin_browser: Client, mixed: dict[str, Timer]) -> None:
    now = timezone.now()
    after = (now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    before = (now + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S")  # no offset: UTC
    assert names(admin_browser.get(f"{LIST}?fire_after={after}&fire_before={before}")) == {"oven"}
    assert names(admin_browser.get(f"{LIST}?fire_after={after}")) == {"oven", "report"}
    page = admin_browser.get(f"{LIST}?fire_after=yesterday")
    assert page.status_code == 200
    assert "is not a time" in page.content.decode()


def test_search_by_id_name_and_label_value(admin_browser: Client, mixed: dict[str, Timer]) -> None:
    assert names(admin_browser.get(f"{LIST}?q={mixed['globex'].pk}")) == {"report"}
    assert names(admin_browser.get(f"{LIST}?q=wat")) == {"water"}
    assert names(admin_browser.get(f"{LIST}?q=kitchen")) == {"oven"}


def test_timer_pages_cannot_edit_add_or_delete(admin_browser: Client, mixed: dict[str, Timer]) -> None:
    timer = mixed["kitchen"]
    assert admin_browser.get(f"{LIST}add/").status_code == 403
    assert admin_browser.post(change_url(timer), {"name": "renamed"}).status_code == 403
    assert admin_browser.get(f"{LIST}{timer.pk}/delete/").status_code == 403
    assert Timer.objects.get(pk=timer.pk).name == "oven"


def test_event_list_shows_milliseconds(admin_browser: Client, mixed: dict[str, Timer]) -> None:
    from timers.models import TimerEvent

    TimerEvent.objects.create(timer=mixed["kitchen"], kind="created", occurred_at=FIRE_AT, state_version=1)
    html = admin_browser.get("/admin/timers/timerevent/").content.decode()
    assert "2026-12-01 19:40:12.345Z" in html
