"""POST /api/timers and GET /api/timers/{id}: the happy paths and the timer body."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tests.assertions import assert_error
from tests.timers.conftest import CreateTimer
from timers.models import Timer, TimerEvent

TIMER_FIELDS = {
    "id",
    "tenantId",
    "name",
    "status",
    "durationMs",
    "createdAt",
    "fireAt",
    "requestedBy",
    "metadata",
    "labels",
    "actionBundle",
    "agentBinding",
    "firedAt",
    "settledAt",
    "cancelledAt",
    "cancelReason",
    "cancelledBy",
    "failureReason",
    "stateVersion",
    "latenessMs",
    "jitterMs",
    "ecosystem",
}


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


def test_original_minoots_body_returns_201_with_every_timer_field(client: APIClient) -> None:
    body = {
        "tenantId": "acme",
        "requestedBy": "agent-7",
        "name": "deploy-check",
        "duration": "5m",
        "metadata": {"pr": 42, "nested": {"ok": True}},
        "labels": {"env": "prod", "team": "infra"},
        "actionBundle": None,
        "agentBinding": {"agentId": "a1"},
    }
    response = client.post("/api/timers", body, format="json", HTTP_X_TENANT_ID="acme")
    assert response.status_code == 201, response.content
    timer = response.json()
    assert set(timer) == TIMER_FIELDS
    assert timer["tenantId"] == "acme"
    assert timer["name"] == "deploy-check"
    assert timer["status"] == "scheduled"
    assert timer["durationMs"] == 300_000
    assert timer["requestedBy"] == "agent-7"
    assert timer["metadata"] == {"pr": 42, "nested": {"ok": True}}
    assert timer["labels"] == {"env": "prod", "team": "infra"}
    assert timer["agentBinding"] == {"agentId": "a1"}
    assert timer["actionBundle"] is None
    assert timer["stateVersion"] == 1
    for empty in ("firedAt", "settledAt", "cancelledAt", "cancelReason", "cancelledBy", "failureReason", "latenessMs"):
        assert timer[empty] is None, empty
    assert _parse(timer["fireAt"]) - _parse(timer["createdAt"]) == timedelta(minutes=5)


def test_created_timer_is_stored_for_the_credentials_tenant(client: APIClient) -> None:
    response = client.post("/api/timers", {"name": "stored", "duration": "5m"}, format="json")
    assert response.status_code == 201
    stored = Timer.objects.get(pk=response.json()["id"])
    assert stored.tenant_id == "acme"
    assert stored.name == "stored"


def test_get_returns_the_created_timer_with_its_action_runs(client: APIClient, create_timer: CreateTimer) -> None:
    created = create_timer(name="fetch-me", labels={"env": "dev"})
    response = client.get(f"/api/timers/{created['id']}")
    assert response.status_code == 200
    fetched = response.json()
    assert set(fetched) == TIMER_FIELDS | {"actionRuns"}
    assert fetched["actionRuns"] == []
    assert {k: fetched[k] for k in TIMER_FIELDS} == created


def test_get_of_an_unknown_timer_is_404(client: APIClient) -> None:
    response = client.get("/api/timers/00000000-0000-0000-0000-000000000000")
    assert_error(response, 404, contains="00000000-0000-0000-0000-000000000000")


@pytest.mark.parametrize(
    ("duration", "expected_ms"),
    [
        ("5m", 300_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        ("1h30m", 5_400_000),
        ("PT15M", 900_000),
        ("P1DT2H", 93_600_000),
        (120_000, 120_000),
        ("120000", 120_000),
    ],
)
def test_every_duration_form_sets_duration_ms(client: APIClient, duration: object, expected_ms: int) -> None:
    response = client.post("/api/timers", {"name": "d", "duration": duration}, format="json")
    assert response.status_code == 201, response.content
    timer = response.json()
    assert timer["durationMs"] == expected_ms
    assert _parse(timer["fireAt"]) - _parse(timer["createdAt"]) == timedelta(milliseconds=expected_ms)


@pytest.mark.parametrize(("duration", "expected_ms"), [("500ms", 500), ("30s", 30_000)])
def test_timer_due_within_the_arm_horizon_is_created_armed(client: APIClient, duration: str, expected_ms: int) -> None:
    response = client.post("/api/timers", {"name": "soon", "duration": duration}, format="json")
    assert response.status_code == 201, response.content
    timer = response.json()
    assert timer["status"] == "armed"
    assert timer["durationMs"] == expected_ms
    assert timer["stateVersion"] == 2
    kinds = list(TimerEvent.objects.filter(timer_id=timer["id"]).values_list("kind", flat=True))
    assert kinds == ["created", "armed"]


def test_timer_due_beyond_the_arm_horizon_is_created_scheduled(client: APIClient) -> None:
    response = client.post("/api/timers", {"name": "later", "duration": "2m"}, format="json")
    assert response.json()["status"] == "scheduled"
    assert list(TimerEvent.objects.filter(timer_id=response.json()["id"]).values_list("kind", flat=True)) == ["created"]


def test_fire_at_with_an_offset_is_stored_and_returned_in_utc(client: APIClient) -> None:
    local = (timezone.now() + timedelta(hours=3)).astimezone(timezone.get_fixed_timezone(120)).replace(microsecond=0)
    response = client.post("/api/timers", {"name": "at", "fireAt": local.isoformat()}, format="json")
    assert response.status_code == 201, response.content
    timer = response.json()
    fire_at = _parse(timer["fireAt"])
    assert fire_at == local
    assert fire_at.utcoffset() == timedelta(0)
    # durationMs is the whole milliseconds between the request and fireAt.
    assert timer["durationMs"] == (fire_at - _parse(timer["createdAt"])) // timedelta(milliseconds=1)
    assert timer["durationMs"] <= 3 * 3600 * 1000


def test_fire_at_with_z_suffix_is_accepted(client: APIClient) -> None:
    target = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    response = client.post("/api/timers", {"name": "z", "fireAt": target.strftime("%Y-%m-%dT%H:%M:%SZ")}, format="json")
    assert response.status_code == 201, response.content
    assert _parse(response.json()["fireAt"]) == target


def test_requested_by_defaults_to_the_api_key_subject(client: APIClient) -> None:
    timer = client.post("/api/timers", {"name": "who", "duration": "5m"}, format="json").json()
    assert timer["requestedBy"].startswith("apikey:")


def test_explicit_null_metadata_and_labels_become_empty_objects(client: APIClient) -> None:
    response = client.post(
        "/api/timers", {"name": "n", "duration": "5m", "metadata": None, "labels": None}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["metadata"] == {}
    assert response.json()["labels"] == {}


def test_empty_action_bundle_is_stored_as_given(client: APIClient) -> None:
    bundle = {"actions": [], "concurrency": 1}
    response = client.post("/api/timers", {"name": "b", "duration": "5m", "actionBundle": bundle}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["actionBundle"] == bundle


def test_boundary_values_are_accepted(client: APIClient) -> None:
    body = {
        "name": "n" * 200,
        "duration": "365d",
        "labels": {f"k{i}": "v" for i in range(64)},
        "metadata": {"blob": "x" * (64 * 1024 - 20)},
    }
    response = client.post("/api/timers", body, format="json")
    assert response.status_code == 201, response.content
    assert len(response.json()["labels"]) == 64


@pytest.mark.parametrize(
    "template",
    ["{date}T{time}Z", "{date}t{time}z", "{date} {time}+00:00", "{date}T{time}.123456789Z", "{date}T{time}-00:00"],
)
def test_every_rfc3339_spelling_of_fire_at_is_accepted(client: APIClient, template: str) -> None:
    target = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    text = template.format(date=target.strftime("%Y-%m-%d"), time=target.strftime("%H:%M:%S"))
    response = client.post("/api/timers", {"name": "rfc", "fireAt": text}, format="json")
    assert response.status_code == 201, response.content
    # Only the fraction of a second may differ (".123456789"): never the hours of a zone.
    assert timedelta(0) <= _parse(response.json()["fireAt"]) - target < timedelta(seconds=1)


def test_a_bundle_of_20_actions_is_accepted(client: APIClient, settings: Any) -> None:
    settings.MINOOTS_WEBHOOK_ALLOW_PRIVATE = True  # no DNS lookups in this test
    actions = [{"id": f"a{i}", "kind": "webhook", "parameters": {"url": "http://127.0.0.1:9/hook"}} for i in range(20)]
    bundle = {"actions": actions, "concurrency": 2, "retryPolicy": {"maxAttempts": 2}}
    response = client.post("/api/timers", {"name": "many", "duration": "5m", "actionBundle": bundle}, format="json")
    assert response.status_code == 201, response.content
    assert len(response.json()["actionBundle"]["actions"]) == 20


def test_a_database_outage_during_a_create_is_logged_once_at_warning_not_error(
    client: APIClient, monkeypatch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from django.db import OperationalError

    from timers import services

    def down(**kwargs: Any) -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr(services, "timer_create", down)
    with caplog.at_level(logging.INFO):
        assert_error(client.post("/api/timers", {"name": "t", "duration": "5m"}, format="json"), 503)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "database unavailable: OperationalError"
    ]


def test_a_create_costs_the_key_lookup_and_one_insert_of_the_timer_with_its_events(client: APIClient) -> None:
    """The create path's round trips: the API key and its tenant in one SELECT, then the timer
    and its 'created' and 'armed' events in one statement on Postgres (two inserts elsewhere)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    assert client.post("/api/timers", {"name": "warm-up", "duration": "5s"}, format="json").status_code == 201
    with CaptureQueriesContext(connection) as captured:
        response = client.post("/api/timers", {"name": "counted", "duration": "5s"}, format="json")
    assert response.status_code == 201, response.content
    statements = [
        q["sql"]
        for q in captured.captured_queries
        if not q["sql"].startswith(("SAVEPOINT", "RELEASE", "BEGIN", "COMMIT"))
    ]
    assert len(statements) == (2 if connection.vendor == "postgresql" else 3), statements
    assert "timers_tenant" in statements[0]
    timer = Timer.objects.get(pk=response.json()["id"])
    assert [e.kind for e in TimerEvent.objects.filter(timer=timer).order_by("id")] == ["created", "armed"]
    assert [e.state_version for e in TimerEvent.objects.filter(timer=timer).order_by("id")] == [1, 2]
    assert response.json()["stateVersion"] == timer.state_version == 2


def test_a_plain_create_body_is_validated_without_drfs_per_field_machinery(
    client: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its rules and errors are run_validation's (tests/timers/test_batch_fast_paths.py), its
    cost not: a plain body never reaches it, a refused one still does and gets its error."""
    from timers.api.serializers import TimerCreateInput

    reached: list[Any] = []
    real = TimerCreateInput.run_validation

    def counted(self: Any, data: Any = None) -> Any:
        reached.append(data)
        return real(self, data)

    monkeypatch.setattr(TimerCreateInput, "run_validation", counted)
    body = {"name": "plain", "duration": "5s", "labels": {"team": "a"}, "metadata": {"k": [1]}}
    assert client.post("/api/timers", body, format="json").status_code == 201
    assert reached == []
    assert_error(
        client.post("/api/timers", {"name": " padded ", "duration": "-5s"}, format="json"), 400, field="duration"
    )
    assert len(reached) == 1
