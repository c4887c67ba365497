"""The two bodies the original clients send (issue 13), verbatim, against a live web, worker and
beat: both answer 201 and fire. The second one's webhook goes to https://example.com/hook, which
this machine cannot reach (no internet): its timer fires and then ends failed, naming the action;
the body is not rewritten."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.processes import Processes, wait_for
from timers.models import Tenant

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

SLACK_BODY = {
    "tenantId": "acme",
    "requestedBy": "slack:command",
    "name": "deploy",
    "duration": "5m",
    "metadata": {"slack_note": "note here"},
    "labels": {"minoots.io/region": "us-east"},
    "ecosystem": {"parserator": {"datasetId": "contacts-v3"}},
}
ACTION_BODY = {
    "tenantId": "acme",
    "name": "github-timer",
    "requestedBy": "github-action",
    "duration": "15m",
    "metadata": {},
    "actionBundle": {"actions": [{"id": "a1", "kind": "webhook", "parameters": {"url": "https://example.com/hook"}}]},
    "agentBinding": {"adapter": "mcp", "target": "agent-7", "payloadTemplate": {}, "acknowledgementTimeoutMs": 60000},
}


def test_the_original_clients_bodies_are_created_and_fire(tenant: Tenant, processes: Processes) -> None:
    base, key = processes.stack(tenant)
    headers = {**key, "accept": "application/json", "x-minoots-region": "us-east"}
    ids = []
    for body in (SLACK_BODY, ACTION_BODY):
        created = requests.post(f"{base}/api/timers", json=body, headers=headers, timeout=10)
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    # Minutes away as sent; "fire now" moves them to now (the operator's reschedule), so that
    # they fire within the test.
    for timer_id in ids:
        moved = requests.patch(f"{base}/api/timers/{timer_id}", json={"duration": "500ms"}, headers=key, timeout=10)
        assert moved.status_code == 200, moved.text

    def ended(timer_id: str) -> dict[str, Any] | None:
        body = requests.get(f"{base}/api/timers/{timer_id}", headers=key, timeout=10).json()
        return body if body["status"] in ("settled", "failed") else None

    slack = wait_for(lambda: ended(ids[0]), timeout=30, what="the Slack body's timer to fire")
    assert slack["status"] == "settled" and slack["firedAt"] and slack["jitterMs"] is not None
    assert slack["ecosystem"] == {"parserator": {"datasetId": "contacts-v3"}}
    action = wait_for(lambda: ended(ids[1]), timeout=60, what="the action body's timer to fire and end")
    assert action["firedAt"]
    # example.com cannot be reached from here: the webhook's attempts fail, then the timer.
    assert action["status"] == "failed", action
    assert action["failureReason"] == "actions failed: a1"
