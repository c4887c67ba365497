"""PATCH /api/timers/{id} and ``timer_reschedule``: a pending timer moved, guarded by its state
version; refused once it is no longer pending (issue 11 item 3)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from django.utils import timezone
from rest_framework.test import APIClient

from tests.assertions import assert_error
from tests.broker import queued_tasks
from tests.factories import api_client, make_api_key
from tests.timers.conftest import CreateTimer
from timers import services
from timers.models import Role, Tenant, Timer, TimerEvent, TimerStatus
from timers.ticks import bucket_of, tick_eta

pytestmark = pytest.mark.django_db(transaction=True)


def patch(client: APIClient, timer_id: str, body: dict[str, Any], **headers: Any) -> Any:
    return client.patch(f"/api/timers/{timer_id}", body, format="json", **headers)


def kinds(timer_id: str) -> list[str]:
    return list(TimerEvent.objects.filter(timer_id=timer_id).order_by("id").values_list("kind", flat=True))


def test_a_new_fire_at_moves_the_timer_and_records_the_change(client: APIClient, create_timer: CreateTimer) -> None:
    timer = create_timer(duration="2h")
    target = (timezone.now() + timedelta(hours=5)).replace(microsecond=0)

    response = patch(client, timer["id"], {"fireAt": target.isoformat()})

    assert response.status_code == 200, response.content
    body = response.json()
    assert datetime.fromisoformat(body["fireAt"]) == target
    assert body["status"] == "scheduled"
    assert body["stateVersion"] == timer["stateVersion"] + 1
    assert response["ETag"] == f'"{body["stateVersion"]}"'
    stored = Timer.objects.get(pk=timer["id"])
    # created_at + duration_ms == fire_at, to the millisecond, still holds
    assert (
        timedelta(0)
        <= stored.fire_at - (stored.created_at + timedelta(milliseconds=stored.duration_ms))
        < timedelta(milliseconds=1)
    )
    assert kinds(timer["id"]) == ["created", "rescheduled"]
    event = TimerEvent.objects.get(timer_id=timer["id"], kind="rescheduled")
    assert datetime.fromisoformat(event.data["from"]) == datetime.fromisoformat(timer["fireAt"])
    assert datetime.fromisoformat(event.data["to"]) == target
    assert event.data["by"].startswith("apikey:")


def test_a_duration_counts_from_now_and_arms_a_timer_moved_into_the_horizon(
    client: APIClient, create_timer: CreateTimer, broker: redis.Redis
) -> None:
    timer = create_timer(duration="3h")
    before = timezone.now()

    response = patch(client, timer["id"], {"duration": "10s"})

    assert response.status_code == 200, response.content
    body = response.json()
    fire_at = datetime.fromisoformat(body["fireAt"])
    assert before + timedelta(seconds=10) <= fire_at <= timezone.now() + timedelta(seconds=10)
    assert body["status"] == "armed"
    assert body["stateVersion"] == timer["stateVersion"] + 2
    assert kinds(timer["id"]) == ["created", "rescheduled", "armed"]
    ticks = queued_tasks(broker, "timers", task="timers.fire_due")
    assert any(t.eta is not None and t.eta == tick_eta(bucket_of(fire_at)) for t in ticks), ticks


def test_an_armed_timer_moved_beyond_the_horizon_goes_back_to_scheduled(
    client: APIClient, create_timer: CreateTimer
) -> None:
    timer = create_timer(duration="20s")
    assert timer["status"] == "armed"
    response = patch(client, timer["id"], {"duration": "2h"})
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "scheduled"
    # The tick published for the old time finds nothing to fire then.
    assert services.timers_fire() == []
    assert Timer.objects.get(pk=timer["id"]).status == TimerStatus.SCHEDULED


def test_if_match_guards_the_change_and_a_stale_version_is_a_409_naming_the_current_one(
    client: APIClient, create_timer: CreateTimer
) -> None:
    timer = create_timer(duration="2h")
    version = timer["stateVersion"]
    first = patch(client, timer["id"], {"duration": "3h"}, HTTP_IF_MATCH=f'"{version}"')
    assert first.status_code == 200, first.content

    # A second writer that read the same version loses, and is told what it is now.
    second = patch(client, timer["id"], {"duration": "4h"}, HTTP_IF_MATCH=f'"{version}"')
    body = assert_error(second, 409, contains=f"changed since state version {version}")
    assert body["details"]["stateVersion"] == version + 1
    assert kinds(timer["id"]) == ["created", "rescheduled"]

    by_field = patch(client, timer["id"], {"duration": "4h", "stateVersion": version + 1})
    assert by_field.status_code == 200, by_field.content
    assert by_field.json()["stateVersion"] == version + 2


def test_the_etag_of_a_get_is_what_if_match_takes(client: APIClient, create_timer: CreateTimer) -> None:
    timer = create_timer(duration="2h")
    etag = client.get(f"/api/timers/{timer['id']}")["ETag"]
    assert patch(client, timer["id"], {"duration": "1h"}, HTTP_IF_MATCH=etag).status_code == 200


@pytest.mark.parametrize(
    ("body", "headers", "field"),
    [
        ({"duration": "1h", "fireAt": "2099-01-01T00:00:00Z"}, {}, "duration"),
        ({}, {}, "duration"),
        ({"fireAt": "2001-01-01T00:00:00Z"}, {}, "fireAt"),
        ({"duration": "-5m"}, {}, "duration"),
        ({"duration": "400d"}, {}, "duration"),
        ({"fireAt": "tomorrow"}, {}, "fireAt"),
        ({"duration": "1h", "stateVersion": 0}, {}, "stateVersion"),
        ({"duration": "1h", "stateVersion": "two"}, {}, "stateVersion"),
        ({"duration": "1h", "colour": "blue"}, {}, "colour"),
        ({"duration": "1h"}, {"HTTP_IF_MATCH": "*"}, "If-Match"),
        ({"duration": "1h", "stateVersion": 1}, {"HTTP_IF_MATCH": '"2"'}, "stateVersion"),
    ],
)
def test_invalid_changes_are_400s_naming_the_field_and_change_nothing(
    client: APIClient, create_timer: CreateTimer, body: dict[str, Any], headers: dict[str, str], field: str
) -> None:
    timer = create_timer(duration="2h")
    assert_error(patch(client, timer["id"], body, **headers), 400, field=field)
    stored = Timer.objects.get(pk=timer["id"])
    assert (stored.state_version, stored.fire_at) == (timer["stateVersion"], datetime.fromisoformat(timer["fireAt"]))


def test_a_timer_no_longer_pending_cannot_be_rescheduled(client: APIClient, create_timer: CreateTimer) -> None:
    timer = create_timer(duration="2h")
    assert client.post(f"/api/timers/{timer['id']}/cancel", {}, format="json").status_code == 200
    body = assert_error(patch(client, timer["id"], {"duration": "1h"}), 409, contains="Timer is cancelled")
    assert body["details"]["status"] == "cancelled"


def test_a_fired_timer_cannot_be_rescheduled(tenant: Tenant, create_timer: CreateTimer, client: APIClient) -> None:
    timer = create_timer(duration="1s")
    Timer.objects.filter(pk=timer["id"]).update(fire_at=timezone.now() - timedelta(seconds=1))
    assert [c.id for c in services.timers_fire()] == [Timer.objects.get(pk=timer["id"]).pk]
    assert_error(patch(client, timer["id"], {"duration": "1h"}), 409, contains="Timer is settled")


def test_another_tenants_timer_is_a_404_and_a_read_only_key_a_403(
    client: APIClient, create_timer: CreateTimer, other_tenant: Tenant, tenant: Tenant
) -> None:
    timer = create_timer(duration="2h")
    other = api_client(api_key=make_api_key(tenant=other_tenant))
    assert_error(patch(other, timer["id"], {"duration": "1h"}), 404)
    reader = api_client(api_key=make_api_key(tenant=tenant, roles=[Role.TIMER_READ]))
    assert_error(patch(reader, timer["id"], {"duration": "1h"}), 403)
    assert Timer.objects.get(pk=timer["id"]).state_version == timer["stateVersion"]


def test_fire_now_from_an_operator_is_a_reschedule_to_the_past_which_means_now(
    tenant: Tenant, create_timer: CreateTimer
) -> None:
    """The admin's and the shell's "fire now": an internal caller's past time means now."""
    timer = Timer.objects.get(pk=create_timer(duration="2h")["id"])
    moved = services.timer_reschedule(timer=timer, fire_at=timezone.now() - timedelta(seconds=5), by="admin:ops")
    assert moved.status == TimerStatus.ARMED
    assert moved.fire_at <= timezone.now()
    assert [c.id for c in services.timers_fire()] == [moved.pk]
