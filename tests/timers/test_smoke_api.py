from __future__ import annotations

from rest_framework.test import APIClient


def test_original_minoots_body_creates_a_timer_that_get_returns(client: APIClient) -> None:
    body = {
        "tenantId": "acme",
        "requestedBy": "agent-7",
        "name": "deploy-check",
        "duration": "5m",
        "metadata": {"pr": 42},
        "labels": {"env": "prod"},
        "actionBundle": None,
        "agentBinding": {"agentId": "a1"},
    }
    created = client.post("/api/timers", body, format="json")
    assert created.status_code == 201, created.content
    timer = created.json()
    assert timer["status"] == "scheduled"
    assert timer["durationMs"] == 300_000
    fetched = client.get(f"/api/timers/{timer['id']}")
    assert fetched.status_code == 200
    assert fetched.json()["name"] == "deploy-check"
    assert fetched.json()["requestedBy"] == "agent-7"
