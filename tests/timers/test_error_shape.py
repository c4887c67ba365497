"""One error shape, ``{"message", "details"}``, for every error under /api/; schema and docs pages."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from django.test import Client
from rest_framework.test import APIClient

from tests.assertions import assert_error
from tests.timers.conftest import CreateTimer, MakeClient
from timers import services
from timers.models import Tenant, Timer


def test_400_has_the_error_shape(client: APIClient) -> None:
    assert_error(client.post("/api/timers", {"name": "x"}, format="json"), 400)


def test_401_has_the_error_shape(anon_client: APIClient) -> None:
    assert_error(anon_client.get("/api/timers"), 401)


def test_403_has_the_error_shape(make_client: MakeClient) -> None:
    assert_error(make_client(roles=["timer.read"]).post("/api/timers", {}, format="json"), 403)


def test_404_of_an_unknown_timer_has_the_error_shape(client: APIClient) -> None:
    assert_error(client.get("/api/timers/5b0c1f6e-53a1-4b8e-9d51-52b8d0e3c5a1"), 404)


@pytest.mark.parametrize(
    "path",
    [
        "/api/nothing-here",
        "/api/timers/not-a-uuid",
        "/api/timers/not-a-uuid/",  # /api/timers/ itself is a 308 to /api/timers (tests/ops/test_pages.py)
        "/api/",
        "/api/timers/5b0c1f6e-53a1-4b8e-9d51-52b8d0e3c5a1/x",
    ],
)
def test_unknown_api_url_is_a_json_404(client: APIClient, path: str) -> None:
    body = assert_error(client.get(path), 404)
    assert body["message"] == "Not found"


def test_unknown_api_url_is_a_json_404_even_without_credentials(anon_client: APIClient) -> None:
    assert_error(anon_client.post("/api/nothing-here", {}, format="json"), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("delete", "/api/timers"),
        ("put", "/api/timers"),
        ("delete", "/api/timers/{id}"),
        ("post", "/api/timers/{id}/events"),
    ],
)
def test_405_has_the_error_shape(client: APIClient, create_timer: CreateTimer, method: str, path: str) -> None:
    timer = create_timer()
    response = getattr(client, method)(path.format(id=timer["id"]), {}, format="json")
    body = assert_error(response, 405)
    assert method.upper() in body["message"]


def test_409_has_the_error_shape(client: APIClient, create_timer: CreateTimer) -> None:
    timer = create_timer()
    Timer.objects.filter(pk=timer["id"]).update(status="fired")
    assert_error(client.patch(f"/api/timers/{timer['id']}", {"duration": "5m"}, format="json"), 409)


def test_429_has_the_error_shape_with_the_limit_type(client: APIClient, tenant: Tenant) -> None:
    tenant.max_active_timers = 0
    tenant.save()
    body = assert_error(client.post("/api/timers", {"name": "x", "duration": "5m"}, format="json"), 429)
    assert body["limitType"] == "burst"


def test_a_body_over_the_upload_limit_is_a_json_413(client: APIClient, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = b'{"name": "t", "duration": "5m", "metadata": {"x": "' + b"a" * 20_000 + b'"}}'
    response = client.post("/api/timers", data=body, content_type="application/json")
    body_json = assert_error(response, 413)
    assert "10000" in body_json["message"]
    assert not Timer.objects.exists()


def test_unexpected_error_is_a_json_500_not_an_html_page(client: APIClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(**kwargs: Any) -> Any:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(services, "timer_create", explode)
    response = client.post("/api/timers", {"name": "x", "duration": "5m"}, format="json")
    body = assert_error(response, 500)
    assert body["message"] == "Internal server error"
    assert "database on fire" not in response.content.decode()


def test_unexpected_error_is_json_for_a_browser_too(client: APIClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "timer_create", lambda **kwargs: 1 / 0)
    response = client.post("/api/timers", {"name": "x", "duration": "5m"}, format="json", HTTP_ACCEPT="text/html")
    assert_error(response, 500)


def test_errors_outside_the_api_are_left_to_django(db: Any) -> None:
    response = Client().get("/admin/")
    assert response.status_code == 302


def test_openapi_schema_describes_every_timer_endpoint(client: APIClient) -> None:
    response = client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    assert {"get", "post"} <= set(paths["/api/timers"])
    assert "get" in paths["/api/timers/{timer_id}"]
    assert "post" in paths["/api/timers/{timer_id}/cancel"]
    assert "get" in paths["/api/timers/{timer_id}/events"]
    list_params = {p["name"] for p in paths["/api/timers"]["get"]["parameters"]}
    assert {"status", "name", "label", "fireAfter", "fireBefore", "cursor", "limit"} <= list_params
    create_fields = set(schema["components"]["schemas"]["TimerCreateInput"]["properties"])
    assert {"name", "duration", "fireAt", "metadata", "labels", "actionBundle", "agentBinding"} <= create_fields


def test_openapi_schema_is_available_as_json(client: APIClient) -> None:
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    assert response.json()["info"]["title"] == "MINOOTS API"


def test_interactive_docs_page_loads_the_schema(client: APIClient) -> None:
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"/api/schema/" in response.content


def test_openapi_schema_declares_both_api_authentication_methods(client: APIClient) -> None:
    schema = client.get("/api/schema/?format=json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["bearerJwt"]["scheme"] == "bearer"
    assert schemes["bearerJwt"]["bearerFormat"] == "JWT"
    security = schema["paths"]["/api/timers"]["post"]["security"]
    assert {"apiKey": []} in security and {"bearerJwt": []} in security


def test_openapi_operation_ids_are_unique(client: APIClient) -> None:
    schema = client.get("/api/schema/?format=json").json()
    ids = [op["operationId"] for path in schema["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))
    assert "timers_list" in ids and "timers_create" in ids


def test_openapi_create_body_documents_duration_and_fire_at_types(client: APIClient) -> None:
    props = client.get("/api/schema/?format=json").json()["components"]["schemas"]["TimerCreateInput"]["properties"]
    assert {"type": "integer"} in props["duration"]["oneOf"]
    assert props["fireAt"]["format"] == "date-time"
    assert props["labels"]["additionalProperties"] == {"type": "string"}


def test_schema_and_docs_need_credentials_like_every_api_endpoint(anon_client: APIClient, db: Any) -> None:
    assert anon_client.get("/api/schema/").status_code == 401
    # The docs pages hold no schema: a visitor without credentials is sent to log in first.
    for path in ("/api/docs/", "/api/redoc/"):
        response = anon_client.get(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith("/admin/login/"), path


def test_a_disallowed_host_header_under_api_gets_a_json_400(client: Any) -> None:
    response = client.get("/api/timers", HTTP_HOST="evil.example")
    assert assert_error(response, 400)["message"] == "Bad request"


def test_a_database_outage_is_a_503_with_retry_after_not_a_500(client: APIClient, monkeypatch: Any) -> None:
    from django.db import OperationalError

    def down(**kwargs: Any) -> Any:
        raise OperationalError("connection refused")

    # timers.api.views calls services.timer_create through this same module object.
    monkeypatch.setattr(services, "timer_create", down)
    response = client.post("/api/timers", {"name": "t", "duration": "5m"}, format="json")
    assert_error(response, 503, contains="Database unavailable")
    assert response["Retry-After"] == "5"
