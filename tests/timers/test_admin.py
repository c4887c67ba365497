"""The operator dashboard: tenants, keys (never the secret), timers with read-only history, events."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tests.timers.conftest import CreateTimer
from timers.models import ApiKey, Tenant, Timer


@pytest.fixture
def admin_browser(db: Any) -> Client:
    user = get_user_model().objects.create_user("root", is_staff=True, is_superuser=True)
    c = Client()
    c.force_login(user)
    return c


@pytest.mark.parametrize("model", ["tenant", "apikey", "timer", "timerevent"])
def test_every_timer_model_has_an_admin_changelist(admin_browser: Client, model: str) -> None:
    assert admin_browser.get(f"/admin/timers/{model}/").status_code == 200


def test_api_key_pages_never_show_the_key_or_its_hash(admin_browser: Client, tenant: Tenant, api_key: str) -> None:
    key = ApiKey.objects.get()
    for url in ("/admin/timers/apikey/", f"/admin/timers/apikey/{key.pk}/change/"):
        page = admin_browser.get(url)
        assert page.status_code == 200
        assert api_key.encode() not in page.content
        assert key.key_hash.encode() not in page.content


def test_api_keys_cannot_be_added_in_the_admin(admin_browser: Client) -> None:
    assert admin_browser.get("/admin/timers/apikey/add/").status_code == 403


def test_timer_page_shows_its_history_read_only(admin_browser: Client, create_timer: CreateTimer) -> None:
    timer = create_timer(name="inspect-me", duration="30s")
    page = admin_browser.get(f"/admin/timers/timer/{timer['id']}/change/")
    assert page.status_code == 200
    assert b"inspect-me" in page.content
    assert b"armed" in page.content
    assert b'name="_save"' not in page.content
    response = admin_browser.post(f"/admin/timers/timer/{timer['id']}/change/", {"name": "renamed"})
    assert response.status_code == 403
    assert Timer.objects.get(pk=timer["id"]).name == "inspect-me"


def test_timers_cannot_be_added_in_the_admin(admin_browser: Client) -> None:
    assert admin_browser.get("/admin/timers/timer/add/").status_code == 403


def test_timer_changelist_filters_by_status_and_tenant(
    admin_browser: Client, client: Any, create_timer: CreateTimer, other_client: Any
) -> None:
    create_timer(name="acme-scheduled")
    create_timer(other_client, name="globex-scheduled")
    cancelled = create_timer(name="acme-cancelled")
    assert client.post(f"/api/timers/{cancelled['id']}/cancel", {}, format="json").status_code == 200
    by_tenant = admin_browser.get("/admin/timers/timer/?tenant__id__exact=globex")
    assert by_tenant.status_code == 200
    assert b"globex-scheduled" in by_tenant.content
    assert b"acme-scheduled" not in by_tenant.content
    by_status = admin_browser.get("/admin/timers/timer/?status__exact=cancelled")
    assert by_status.status_code == 200
    assert b"acme-cancelled" in by_status.content
    assert b"acme-scheduled" not in by_status.content and b"globex-scheduled" not in by_status.content


def test_timer_search_finds_by_name_and_by_id(admin_browser: Client, create_timer: CreateTimer) -> None:
    wanted = create_timer(name="needle")
    create_timer(name="haystack")
    by_name = admin_browser.get("/admin/timers/timer/?q=need")
    assert b"needle" in by_name.content and b"haystack" not in by_name.content
    by_id = admin_browser.get(f"/admin/timers/timer/?q={wanted['id']}")
    assert b"needle" in by_id.content and b"haystack" not in by_id.content
