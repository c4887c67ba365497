"""POST /api/timers/{id}/cancel and GET /api/timers/{id}/events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tests.assertions import assert_error
from tests.timers.conftest import CreateTimer
from timers.models import Timer


def _cancel(client: APIClient, timer_id: str, body: Any = None) -> Any:
    return client.post(f"/api/timers/{timer_id}/cancel", body if body is not None else {}, format="json")


def _events(client: APIClient, timer_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/timers/{timer_id}/events")
    assert response.status_code == 200, response.content
    return response.json()["events"]


def test_cancelling_a_scheduled_timer_records_reason_and_canceller(
    client: APIClient, create_timer: CreateTimer
) -> None:
    timer = create_timer()
    response = _cancel(client, timer["id"], {"reason": "deploy rolled back"})
    assert response.status_code == 200, response.content
    cancelled = response.json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancelReason"] == "deploy rolled back"
    assert cancelled["cancelledBy"].startswith("apikey:")
    assert datetime.fromisoformat(cancelled["cancelledAt"]) <= timezone.now()
    assert cancelled["stateVersion"] == timer["stateVersion"] + 1
    assert client.get(f"/api/timers/{timer['id']}").json()["status"] == "cancelled"


def test_cancelling_an_armed_timer_cancels_it(client: APIClient, create_timer: CreateTimer) -> None:
    timer = create_timer(duration="30s")
    assert timer["status"] == "armed"
    response = _cancel(client, timer["id"])
    assert response.json()["status"] == "cancelled"
    assert response.json()["stateVersion"] == 3


def test_cancel_without_a_body_is_accepted(client: APIClient, create_timer: CreateTimer) -> None:
    timer = create_timer()
    response = client.post(f"/api/timers/{timer['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["cancelReason"] is None


def test_cancelled_timer_returns_unchanged_when_cancelled_again(client: APIClient, create_timer: CreateTimer) -> None:
    timer = create_timer()
    first = _cancel(client, timer["id"], {"reason": "first"}).json()
    again = _cancel(client, timer["id"], {"reason": "second"})
    assert again.status_code == 200
    assert again.json() == first
    assert [e["kind"] for e in _events(client, timer["id"])] == ["created", "cancelled"]


@pytest.mark.parametrize("terminal", ["settled", "failed"])
def test_cancelling_a_finished_timer_returns_it_unchanged(
    client: APIClient, create_timer: CreateTimer, terminal: str
) -> None:
    timer = create_timer()
    Timer.objects.filter(pk=timer["id"]).update(status=terminal, state_version=5)
    response = _cancel(client, timer["id"])
    assert response.status_code == 200
    assert response.json()["status"] == terminal
    assert response.json()["stateVersion"] == 5
    assert response.json()["cancelledAt"] is None


def test_cancelling_a_fired_timer_with_the_original_body_ends_it_cancelled(
    client: APIClient, create_timer: CreateTimer
) -> None:
    timer = create_timer()
    Timer.objects.filter(pk=timer["id"]).update(status="fired", fired_at=timezone.now(), state_version=3)
    response = client.post(
        f"/api/timers/{timer['id']}/cancel",
        {"tenantId": "acme", "requestedBy": "slack:U123", "reason": "done by hand"},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["cancelledBy"], body["cancelReason"]) == ("cancelled", "slack:U123", "done by hand")
    assert body["stateVersion"] == 4


def test_cancelling_an_unknown_timer_is_404(client: APIClient) -> None:
    assert_error(_cancel(client, "00000000-0000-0000-0000-000000000000"), 404)


def test_cancel_with_a_non_string_reason_is_400(client: APIClient, create_timer: CreateTimer) -> None:
    timer = create_timer()
    response = _cancel(client, timer["id"], {"reason": {"why": "x"}})
    assert_error(response, 400, field="reason")
    assert Timer.objects.get(pk=timer["id"]).status == "scheduled"


def test_cancel_with_an_unknown_field_is_400(client: APIClient, create_timer: CreateTimer) -> None:
    timer = create_timer()
    response = _cancel(client, timer["id"], {"reasn": "typo"})
    assert_error(response, 400, field="reasn")
    assert Timer.objects.get(pk=timer["id"]).status == "scheduled"


def test_cancel_with_a_body_that_is_not_an_object_is_400(client: APIClient, create_timer: CreateTimer) -> None:
    timer = create_timer()
    assert_error(_cancel(client, timer["id"], ["stop"]), 400)
    assert Timer.objects.get(pk=timer["id"]).status == "scheduled"


def test_get_on_cancel_is_405(client: APIClient, create_timer: CreateTimer) -> None:
    timer = create_timer()
    assert_error(client.get(f"/api/timers/{timer['id']}/cancel"), 405)


def test_events_of_a_new_timer_hold_its_creation(client: APIClient, create_timer: CreateTimer) -> None:
    timer = create_timer()
    events = _events(client, timer["id"])
    assert [(e["kind"], e["stateVersion"]) for e in events] == [("created", 1)]
    assert set(events[0]) == {"id", "kind", "occurredAt", "stateVersion", "data"}
    assert datetime.fromisoformat(events[0]["data"]["fireAt"]) == datetime.fromisoformat(timer["fireAt"])
    assert events[0]["occurredAt"] == timer["createdAt"]


def test_events_of_an_armed_then_cancelled_timer_follow_its_state_versions(
    client: APIClient, create_timer: CreateTimer
) -> None:
    timer = create_timer(duration="30s")
    _cancel(client, timer["id"], {"reason": "no longer needed"})
    events = _events(client, timer["id"])
    assert [(e["kind"], e["stateVersion"]) for e in events] == [("created", 1), ("armed", 2), ("cancelled", 3)]
    assert events[-1]["data"]["reason"] == "no longer needed"
    assert events[-1]["data"]["by"].startswith("apikey:")


def test_events_of_an_unknown_timer_are_404(client: APIClient) -> None:
    assert_error(client.get("/api/timers/00000000-0000-0000-0000-000000000000/events"), 404)


def test_cancel_naming_another_tenant_is_403(client: APIClient, create_timer: CreateTimer) -> None:
    timer = create_timer()
    assert_error(_cancel(client, timer["id"], {"tenantId": "globex"}), 403, contains="tenantId")
    assert Timer.objects.get(pk=timer["id"]).status == "scheduled"


def test_cancel_records_the_requested_by_of_an_api_key_caller(client: APIClient, create_timer: CreateTimer) -> None:
    timer = create_timer()
    response = _cancel(client, timer["id"], {"tenantId": "acme", "requestedBy": "agent-9"})
    assert response.status_code == 200
    assert response.json()["cancelledBy"] == "agent-9"
