"""Every operator action, through the admin as an operator clicks it (each one calls a service)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from actions.models import ActionAttempt, ActionRun, RunStatus
from tests.admin_ops.conftest import messages_of, post_action
from tests.factories import api_client, make_api_key, make_run, make_tenant, make_timer
from timers.models import ApiKey, Tenant, Timer, TimerEvent, TimerStatus

pytestmark = pytest.mark.django_db

TIMERS = "/admin/timers/timer/"
RUNS = "/admin/actions/actionrun/"


@pytest.fixture
def acme(db: Any) -> Tenant:
    return make_tenant(id="acme")


def later(
    acme: Tenant, name: str, *, status: str = TimerStatus.SCHEDULED, in_: timedelta = timedelta(hours=1)
) -> Timer:
    return make_timer(tenant=acme, name=name, status=status, fire_at=timezone.now() + in_)


def events(timer: Timer) -> list[tuple[str, dict[str, Any]]]:
    return [(e.kind, e.data) for e in TimerEvent.objects.filter(timer=timer).order_by("id")]


def test_cancel_selected_cancels_pending_and_fired_timers_and_skips_ended_ones(
    admin_browser: Client, acme: Tenant
) -> None:
    scheduled, armed = later(acme, "a"), later(acme, "b", status=TimerStatus.ARMED)
    fired = make_timer(tenant=acme, name="c", status=TimerStatus.FIRED, fired_at=timezone.now())
    settled = make_timer(tenant=acme, name="d", status=TimerStatus.SETTLED, fired_at=timezone.now())
    response = post_action(admin_browser, TIMERS, "cancel_selected", [scheduled.pk, armed.pk, fired.pk, settled.pk])
    assert response.status_code == 200
    for timer in (scheduled, armed, fired):
        timer.refresh_from_db()
        assert timer.status == TimerStatus.CANCELLED and timer.cancelled_by == "admin:root"
    for timer in (scheduled, armed):
        assert events(timer) == [("cancelled", {"reason": "cancelled in the admin", "by": "admin:root"})]
    settled.refresh_from_db()
    assert settled.status == TimerStatus.SETTLED
    text = " ".join(messages_of(response))
    assert "3 timer(s) cancelled" in text and "1 skipped" in text and "already settled" in text


def test_fire_now_moves_a_pending_timer_to_now_and_arms_it(admin_browser: Client, acme: Tenant, broker: Any) -> None:
    timer = later(acme, "a", in_=timedelta(days=1))
    before = timezone.now()
    response = post_action(admin_browser, TIMERS, "fire_now", [timer.pk])
    timer.refresh_from_db()
    assert before <= timer.fire_at <= timezone.now()
    assert timer.status == TimerStatus.ARMED
    assert [kind for kind, _ in events(timer)] == ["rescheduled", "armed"]
    assert events(timer)[0][1]["by"] == "admin:root"
    assert "1 timer(s) fired now" in " ".join(messages_of(response))


def test_reschedule_shows_a_form_first_then_moves_by_a_duration(admin_browser: Client, acme: Tenant) -> None:
    timer = later(acme, "a", in_=timedelta(minutes=10))
    form = admin_browser.post(TIMERS, {"action": "reschedule_selected", "_selected_action": [str(timer.pk)]})
    assert form.status_code == 200
    assert b"Reschedule 1 timer" in form.content and b'name="duration"' in form.content
    timer.refresh_from_db()
    assert timer.state_version == 1  # nothing changed yet
    before = timezone.now()
    response = post_action(admin_browser, TIMERS, "reschedule_selected", [timer.pk], apply="1", duration="2h")
    timer.refresh_from_db()
    assert before + timedelta(hours=2) <= timer.fire_at <= timezone.now() + timedelta(hours=2)
    assert timer.status == TimerStatus.SCHEDULED
    assert events(timer)[0][0] == "rescheduled"
    assert "1 timer(s) rescheduled" in " ".join(messages_of(response))


def test_reschedule_to_a_fire_at(admin_browser: Client, acme: Tenant) -> None:
    timer = later(acme, "a")
    target = (timezone.now() + timedelta(days=2)).replace(microsecond=0)
    post_action(
        admin_browser,
        TIMERS,
        "reschedule_selected",
        [timer.pk],
        apply="1",
        fire_at=target.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    timer.refresh_from_db()
    assert timer.fire_at == target


def test_reschedule_refuses_a_past_fire_at_and_a_form_with_both_or_neither(admin_browser: Client, acme: Tenant) -> None:
    timer = later(acme, "a")
    past = post_action(
        admin_browser, TIMERS, "reschedule_selected", [timer.pk], apply="1", fire_at="2020-01-01T00:00:00Z"
    )
    assert "must be in the future" in " ".join(messages_of(past))
    for data in ({"duration": "5m", "fire_at": "2030-01-01T00:00:00Z"}, {}):
        again = admin_browser.post(
            TIMERS, {"action": "reschedule_selected", "_selected_action": [str(timer.pk)], "apply": "1", **data}
        )
        assert again.status_code == 200 and b"Give exactly one" in again.content
    bad = admin_browser.post(
        TIMERS, {"action": "reschedule_selected", "_selected_action": [str(timer.pk)], "apply": "1", "duration": "soon"}
    )
    assert b"duration:" in bad.content
    timer.refresh_from_db()
    assert timer.state_version == 1


def test_reschedule_skips_timers_no_longer_pending(admin_browser: Client, acme: Tenant) -> None:
    settled = make_timer(tenant=acme, status=TimerStatus.SETTLED, fired_at=timezone.now(), settled_at=timezone.now())
    response = post_action(admin_browser, TIMERS, "reschedule_selected", [settled.pk], apply="1", duration="1h")
    assert "only a scheduled or armed timer can be rescheduled" in " ".join(messages_of(response))


def failed_timer_with_run(acme: Tenant) -> tuple[Timer, ActionRun]:
    now = timezone.now()
    timer = make_timer(
        tenant=acme,
        status=TimerStatus.FAILED,
        fired_at=now,
        settled_at=now,
        failure_reason="actions failed: hook",
        actions=[{"id": "hook", "kind": "webhook", "parameters": {"url": "https://example.com/hook"}}],
    )
    run = make_run(
        timer=timer,
        action_id="hook",
        status=RunStatus.FAILED,
        attempts=3,
        finished_at=now,
        last_error="HTTP 500",
        parameters={"url": "https://example.com/hook"},
    )
    ActionAttempt.objects.create(run=run, number=3, started_at=now, finished_at=now, outcome="permanent_failure")
    return timer, run


def test_retry_a_failed_run_from_the_run_list(admin_browser: Client, acme: Tenant, broker: Any) -> None:
    timer, run = failed_timer_with_run(acme)
    response = post_action(admin_browser, RUNS, "retry_selected", [run.pk])
    assert "1 action run(s) retried" in " ".join(messages_of(response))
    timer.refresh_from_db()
    run.refresh_from_db()
    assert timer.status == TimerStatus.FIRED and timer.failure_reason == ""
    assert run.status == RunStatus.PENDING
    assert "retried" in [kind for kind, _ in events(timer)]


def test_retry_the_failed_runs_of_selected_timers(admin_browser: Client, acme: Tenant, broker: Any) -> None:
    timer, run = failed_timer_with_run(acme)
    settled = make_timer(tenant=acme, status=TimerStatus.SETTLED, fired_at=timezone.now(), settled_at=timezone.now())
    response = post_action(admin_browser, TIMERS, "retry_failed_runs", [timer.pk, settled.pk])
    assert "1 action run(s) retried" in " ".join(messages_of(response))
    timer.refresh_from_db()
    assert timer.status == TimerStatus.FIRED


def test_retry_refuses_a_run_that_did_not_fail(admin_browser: Client, acme: Tenant, broker: Any) -> None:
    timer = make_timer(tenant=acme, status=TimerStatus.SETTLED, fired_at=timezone.now(), settled_at=timezone.now())
    run = make_run(timer=timer, status=RunStatus.SUCCEEDED, attempts=1, finished_at=timezone.now())
    response = post_action(admin_browser, RUNS, "retry_selected", [run.pk])
    text = " ".join(messages_of(response))
    assert "0 action run(s) retried" in text and "1 not retried" in text
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED


def test_action_runs_and_attempts_are_read_only_and_never_deleted(admin_browser: Client, acme: Tenant) -> None:
    timer, run = failed_timer_with_run(acme)
    page = admin_browser.get(f"{RUNS}{run.pk}/change/")
    assert page.status_code == 200
    assert b"HTTP 500" in page.content and b'name="_save"' not in page.content
    assert admin_browser.get(f"{RUNS}{run.pk}/delete/").status_code == 403
    assert admin_browser.post(f"{RUNS}{run.pk}/change/", {"action_id": "x"}).status_code == 403
    assert admin_browser.get(f"{RUNS}add/").status_code == 403
    changelist = admin_browser.get(RUNS)
    assert b"delete_selected" not in changelist.content
    post_action(admin_browser, RUNS, "delete_selected", [run.pk], post="yes")
    assert ActionRun.objects.filter(pk=run.pk).exists() and ActionAttempt.objects.filter(run=run).exists()
    assert b"delete_selected" not in admin_browser.get(TIMERS).content


def test_tenant_page_lists_keys_without_secret_or_hash_and_revokes_one(admin_browser: Client, acme: Tenant) -> None:
    raw = make_api_key(tenant=acme, name="ci")
    key = ApiKey.objects.get()
    assert api_client(api_key=raw).get("/api/timers").status_code == 200
    page = admin_browser.get(f"/admin/timers/tenant/{acme.pk}/change/")
    html = page.content.decode()
    assert key.prefix in html and ">ci<" in html and "timer.read" in html
    assert raw not in html and key.key_hash not in html
    assert acme.webhook_secret not in html
    assert 'formaction="/admin/timers/tenant/acme/revoke-key/' in html
    response = admin_browser.post(f"/admin/timers/tenant/acme/revoke-key/{key.pk}/", follow=True)
    assert f"Key {key.prefix} (ci) revoked." in messages_of(response)
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert api_client(api_key=raw).get("/api/timers").status_code == 401
    again = admin_browser.post(f"/admin/timers/tenant/acme/revoke-key/{key.pk}/", follow=True)
    assert "already revoked" in " ".join(messages_of(again))
    assert b"revoke-key" not in admin_browser.get(f"/admin/timers/tenant/{acme.pk}/change/").content


def test_revoke_by_get_changes_nothing(admin_browser: Client, acme: Tenant) -> None:
    make_api_key(tenant=acme)
    key = ApiKey.objects.get()
    assert admin_browser.get(f"/admin/timers/tenant/acme/revoke-key/{key.pk}/").status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is None


def test_revoke_selected_keys_from_the_key_list(admin_browser: Client, acme: Tenant) -> None:
    make_api_key(tenant=acme, name="one")
    make_api_key(tenant=acme, name="two")
    response = post_action(
        admin_browser, "/admin/timers/apikey/", "revoke_selected", list(ApiKey.objects.values_list("pk", flat=True))
    )
    assert "2 key(s) revoked" in " ".join(messages_of(response))
    assert not ApiKey.objects.filter(revoked_at__isnull=True).exists()
    page = admin_browser.get("/admin/timers/apikey/").content.decode()
    assert all(k.key_hash not in page for k in ApiKey.objects.all())


def test_rotate_the_signing_secret(admin_browser: Client, acme: Tenant) -> None:
    old = acme.webhook_secret
    response = post_action(admin_browser, "/admin/timers/tenant/", "rotate_webhook_secret", [acme.pk])
    acme.refresh_from_db()
    assert acme.webhook_secret != old and acme.previous_webhook_secret == old
    assert acme.webhook_secret in " ".join(messages_of(response))


def test_quotas_and_allowed_kinds_are_edited_on_the_tenant_page(admin_browser: Client, acme: Tenant) -> None:
    make_api_key(tenant=acme)
    page = admin_browser.get(f"/admin/timers/tenant/{acme.pk}/change/")
    assert b'name="allowed_action_kinds"' in page.content and b'value="webhook"' in page.content
    formset = page.context["inline_admin_formsets"][0].formset
    data = {
        "name": "Acme Corp",
        "max_active_timers": "7",
        "max_creates_per_day": "70",
        "allowed_action_kinds": ["webhook", "file"],
        f"{formset.prefix}-TOTAL_FORMS": str(formset.total_form_count()),
        f"{formset.prefix}-INITIAL_FORMS": str(formset.initial_form_count()),
        "_save": "Save",
    }
    response = admin_browser.post(f"/admin/timers/tenant/{acme.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    acme.refresh_from_db()
    assert (acme.name, acme.max_active_timers, acme.max_creates_per_day) == ("Acme Corp", 7, 70)
    assert acme.allowed_action_kinds == ["file", "webhook"]
    data["allowed_action_kinds"] = []
    admin_browser.post(f"/admin/timers/tenant/{acme.pk}/change/", data)
    acme.refresh_from_db()
    assert acme.allowed_action_kinds == []
    assert ApiKey.objects.filter(tenant=acme).count() == 1  # the inline keys are untouched


def test_staff_who_may_only_view_get_no_actions(viewer_browser: Client, acme: Tenant) -> None:
    timer = later(acme, "a")
    make_api_key(tenant=acme)
    key = ApiKey.objects.get()
    page = viewer_browser.get(TIMERS)
    assert page.status_code == 200 and b"cancel_selected" not in page.content
    post_action(viewer_browser, TIMERS, "cancel_selected", [timer.pk])
    timer.refresh_from_db()
    assert timer.status == TimerStatus.SCHEDULED
    viewer_browser.post(f"/admin/timers/tenant/acme/revoke-key/{key.pk}/")
    key.refresh_from_db()
    assert key.revoked_at is None
    assert viewer_browser.get("/admin/").status_code == 200
