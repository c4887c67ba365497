"""The project's own pages: the front page, the offline API docs, the slash redirects and the
browsable API's titles and links (in process; tests/browser/test_pages.py renders them)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from tests.factories import schedule_timer
from timers.models import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> Client:
    user = User.objects.create_superuser("ops", "ops@example.com", "pw-for-tests")
    client = Client()
    client.force_login(user)
    return client


def test_the_front_page_says_what_this_is_and_links_docs_and_admin() -> None:
    response = Client().get("/", HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "durable timer service" in html
    for href in ("/api/docs/", "/api/redoc/", "/admin/", "/api/timers", "/healthz"):
        assert f'href="{href}"' in html


def test_the_front_page_is_json_for_a_client_that_asks_for_json() -> None:
    response = Client().get("/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    body = response.json()
    assert body["service"] == "MINOOTS"
    assert body["links"]["docs"] == "/api/docs/" and body["links"]["admin"] == "/admin/"
    assert set(body) == {"service", "description", "apiVersion", "links", "auth"}
    text = response.content.decode()
    assert settings.SECRET_KEY not in text and settings.DATABASES["default"]["NAME"] not in text


def test_curl_without_an_accept_header_gets_the_html_page() -> None:
    assert Client().get("/").headers["Content-Type"].startswith("text/html")


def test_admin_without_its_slash_redirects_to_the_admin() -> None:
    response = Client().get("/admin")
    assert response.status_code == 301
    assert response["Location"] == "/admin/"


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/api/timers/", "/api/timers"),
        ("/api/timers/stream/", "/api/timers/stream"),
        ("/api/timers/7adb5363-d1d5-455b-94f1-9bc8ac41296e/", "/api/timers/7adb5363-d1d5-455b-94f1-9bc8ac41296e"),
        (
            "/api/timers/7adb5363-d1d5-455b-94f1-9bc8ac41296e/events/",
            "/api/timers/7adb5363-d1d5-455b-94f1-9bc8ac41296e/events",
        ),
    ],
)
def test_api_urls_with_a_trailing_slash_redirect_keeping_the_method(path: str, target: str) -> None:
    for method in ("get", "post", "patch"):
        response = getattr(Client(), method)(f"{path}?status=armed")
        assert response.status_code == 308, method
        assert response["Location"] == f"{target}?status=armed"


def test_a_post_to_the_slashed_list_is_repeated_by_the_client_and_creates(client: APIClient) -> None:
    response = client.post("/api/timers/", {"name": "t", "duration": "5m"}, format="json", follow=True)
    assert response.redirect_chain == [("/api/timers", 308)]
    assert response.status_code == 201
    assert response.json()["name"] == "t"


def test_a_slashed_url_that_does_not_exist_without_its_slash_is_a_json_404() -> None:
    response = Client().get("/api/timers/not-a-uuid/nothing/")
    assert response.status_code == 404
    assert response.json()["message"] == "Not found"


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_the_docs_load_their_files_from_this_server_only(staff: Client, path: str) -> None:
    response = staff.get(path)
    assert response.status_code == 200
    html = response.content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources, html
    assert all(s.startswith("/static/drf_spectacular_sidecar/") for s in sources), sources
    assert "googleapis" not in html and "jsdelivr" not in html


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_a_browser_without_a_session_is_sent_to_log_in_first(path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={path}"


def test_an_api_client_still_gets_the_docs_with_its_key(client: APIClient) -> None:
    assert client.get("/api/docs/").status_code == 200


def _browsable(staff: Client, path: str) -> str:
    response = staff.get(path, HTTP_ACCEPT="text/html")
    assert response.status_code in (200, 405), response.content[:500]
    html: str = response.content.decode()
    return html


def _title(html: str) -> str:
    match = re.search(r"<h1>(.*?)</h1>", html, re.S)
    assert match is not None
    return match.group(1).strip()


def test_the_browsable_api_has_human_titles_and_links_between_a_timer_and_its_pages(
    staff: Client, tenant: Tenant
) -> None:
    timer = schedule_timer(tenant=tenant, in_=timedelta(minutes=5))
    base = f"/api/timers/{timer.id}"
    q = "?tenant=acme"

    listing = _browsable(staff, f"/api/timers{q}")
    assert _title(listing) == "Timers"
    assert "<title>Timers – MINOOTS API</title>" in listing and 'href="/api/docs/"' in listing
    assert 'href="/api/timers?status=scheduled%2Carmed&amp;tenant=acme"' in listing

    detail = _browsable(staff, f"{base}{q}")
    assert _title(detail) == "Timer"
    assert f'href="{base}/events{q}"' in detail
    assert f'href="{base}/cancel{q}"' in detail

    events = _browsable(staff, f"{base}/events{q}")
    assert _title(events) == "Timer events"
    assert f'href="{base}{q}"' in events

    cancel = _browsable(staff, f"{base}/cancel{q}")  # GET: 405, with the form to POST
    assert _title(cancel) == "Cancel a timer"
    assert f'href="{base}{q}"' in cancel


def test_options_describes_a_view_in_plain_text(client: APIClient) -> None:
    body: dict[str, Any] = client.options("/api/timers").json()
    assert body["name"] == "Timers"
    assert "<a " not in body["description"] and "newest first" in body["description"]


def test_the_favicon_is_served_instead_of_a_404() -> None:
    response = Client().get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
