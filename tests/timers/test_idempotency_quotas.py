"""Idempotency-Key on create, and the per-tenant active (burst) and daily quotas."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework.test import APIClient

from tests.assertions import assert_error
from tests.factories import make_tenant
from timers.models import Tenant, Timer

BODY = {"name": "once", "duration": "5m", "labels": {"env": "prod"}}


def _create(client: APIClient, body: dict[str, Any] | None = None, key: str | None = None) -> Any:
    extra: dict[str, Any] = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post("/api/timers", body or BODY, format="json", **extra)


# --- Idempotency-Key ------------------------------------------------------------------------


def test_repeat_with_the_same_key_and_body_returns_the_original_timer(client: APIClient) -> None:
    first = _create(client, key="req-1")
    again = _create(client, key="req-1")
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json() == first.json()
    assert Timer.objects.count() == 1


def test_same_body_with_keys_in_a_different_order_is_the_same_request(client: APIClient) -> None:
    first = _create(client, {"name": "once", "duration": "5m", "metadata": {"a": 1, "b": 2}}, key="req-1")
    again = _create(client, {"metadata": {"b": 2, "a": 1}, "duration": "5m", "name": "once"}, key="req-1")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


def test_repeat_with_the_same_key_and_a_different_body_is_409(client: APIClient) -> None:
    first = _create(client, key="req-1")
    conflict = _create(client, {**BODY, "duration": "10m"}, key="req-1")
    body = assert_error(conflict, 409, contains="Idempotency-Key")
    assert body["details"] == {"idempotencyKey": "req-1", "timerId": first.json()["id"]}
    assert Timer.objects.count() == 1


def test_different_keys_create_different_timers(client: APIClient) -> None:
    a = _create(client, key="req-1")
    b = _create(client, key="req-2")
    assert a.json()["id"] != b.json()["id"]
    assert Timer.objects.count() == 2


def test_requests_without_a_key_always_create_a_new_timer(client: APIClient) -> None:
    assert _create(client).json()["id"] != _create(client).json()["id"]


def test_the_same_key_in_another_tenant_is_a_different_request(client: APIClient, other_client: APIClient) -> None:
    mine = _create(client, key="shared-key")
    theirs = _create(other_client, key="shared-key")
    assert theirs.status_code == 201
    assert theirs.json()["id"] != mine.json()["id"]
    assert theirs.json()["tenantId"] == "globex"


def test_a_key_older_than_24_hours_creates_a_new_timer(client: APIClient) -> None:
    first = _create(client, key="req-1")
    Timer.objects.filter(pk=first.json()["id"]).update(created_at=timezone.now() - timedelta(hours=25))
    again = _create(client, {**BODY, "duration": "10m"}, key="req-1")
    assert again.status_code == 201
    assert again.json()["id"] != first.json()["id"]
    assert str(Timer.objects.filter(idempotency_key="req-1").get().pk) == again.json()["id"]


def test_a_key_younger_than_24_hours_still_replays(client: APIClient) -> None:
    first = _create(client, key="req-1")
    Timer.objects.filter(pk=first.json()["id"]).update(created_at=timezone.now() - timedelta(hours=23))
    assert _create(client, key="req-1").json()["id"] == first.json()["id"]


def test_replay_returns_the_timers_current_state(client: APIClient) -> None:
    first = _create(client, key="req-1").json()
    client.post(f"/api/timers/{first['id']}/cancel", {}, format="json")
    again = _create(client, key="req-1")
    assert again.status_code == 200
    assert again.json()["id"] == first["id"]
    assert again.json()["status"] == "cancelled"


def test_an_invalid_body_with_a_key_is_400_and_does_not_take_the_key(client: APIClient) -> None:
    assert _create(client, {"name": "bad", "duration": "soon"}, key="req-1").status_code == 400
    assert _create(client, key="req-1").status_code == 201


def test_an_empty_idempotency_key_is_400(client: APIClient) -> None:
    response = _create(client, key="")
    assert_error(response, 400, field="Idempotency-Key")
    assert not Timer.objects.exists()


# --- quotas ---------------------------------------------------------------------------------


def _limit(tenant: Tenant, *, active: int | None = None, daily: int | None = None) -> None:
    if active is not None:
        tenant.max_active_timers = active
    if daily is not None:
        tenant.max_creates_per_day = daily
    tenant.save()


def test_creating_beyond_the_active_timer_quota_is_429_burst(client: APIClient, tenant: Tenant) -> None:
    _limit(tenant, active=2)
    assert _create(client).status_code == 201
    assert _create(client).status_code == 201
    body = assert_error(_create(client), 429, contains="2")
    assert body["limitType"] == "burst"
    assert Timer.objects.count() == 2


def test_cancelling_a_timer_frees_room_in_the_active_quota(client: APIClient, tenant: Tenant) -> None:
    _limit(tenant, active=1)
    timer = _create(client).json()
    assert _create(client).status_code == 429
    client.post(f"/api/timers/{timer['id']}/cancel", {}, format="json")
    assert _create(client).status_code == 201


def test_fired_timers_count_as_active(client: APIClient, tenant: Tenant) -> None:
    _limit(tenant, active=1)
    timer = _create(client).json()
    Timer.objects.filter(pk=timer["id"]).update(status="fired")
    assert _create(client).json()["limitType"] == "burst"
    Timer.objects.filter(pk=timer["id"]).update(status="settled")
    assert _create(client).status_code == 201


def test_creating_beyond_the_daily_quota_is_429_daily(client: APIClient, tenant: Tenant) -> None:
    _limit(tenant, daily=2)
    for _ in range(2):
        timer = _create(client).json()
        client.post(f"/api/timers/{timer['id']}/cancel", {}, format="json")  # stay under the burst quota
    assert assert_error(_create(client), 429)["limitType"] == "daily"
    assert Timer.objects.count() == 2


def test_creates_refused_by_the_active_quota_use_none_of_the_daily_quota(client: APIClient, tenant: Tenant) -> None:
    # Both counters are counted in one step; a create the active quota refuses gives its daily count back.
    _limit(tenant, active=1, daily=3)
    timer = _create(client).json()
    for _ in range(3):
        assert _create(client).json()["limitType"] == "burst"
    client.post(f"/api/timers/{timer['id']}/cancel", {}, format="json")
    assert _create(client).status_code == 201  # the second create of the day
    Timer.objects.update(status="cancelled")
    assert _create(client).status_code == 201  # the third
    Timer.objects.update(status="cancelled")
    assert assert_error(_create(client), 429)["limitType"] == "daily"


def test_timers_created_before_today_do_not_count_toward_the_daily_quota(client: APIClient, tenant: Tenant) -> None:
    _limit(tenant, daily=1)
    timer = _create(client).json()
    midnight = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    Timer.objects.filter(pk=timer["id"]).update(created_at=midnight - timedelta(seconds=1))
    assert _create(client).status_code == 201


def test_quotas_are_per_tenant(client: APIClient, other_client: APIClient, tenant: Tenant) -> None:
    _limit(tenant, active=1)
    assert _create(client).status_code == 201
    assert _create(client).status_code == 429
    assert _create(other_client).status_code == 201


def test_an_idempotent_replay_at_the_quota_returns_the_original_timer(client: APIClient, tenant: Tenant) -> None:
    _limit(tenant, active=1, daily=1)
    first = _create(client, key="req-1")
    again = _create(client, key="req-1")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


def test_new_tenants_get_the_default_quotas(db: Any, settings: Any) -> None:
    tenant = make_tenant(id="fresh")
    assert tenant.max_active_timers == settings.MINOOTS_DEFAULT_MAX_ACTIVE_TIMERS
    assert tenant.max_creates_per_day == settings.MINOOTS_DEFAULT_MAX_CREATES_PER_DAY


def _replay_misses_once(monkeypatch: Any) -> list[int]:
    """Make the next replay lookup miss, as when a concurrent request inserts the same key
    between our lookup and our insert; return the list of lookups made."""
    from timers import services

    real_replay = services._idempotent_replay
    calls: list[int] = []

    def miss_first_time(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return None if len(calls) == 1 else real_replay(*args, **kwargs)

    monkeypatch.setattr(services, "_idempotent_replay", miss_first_time)
    return calls


def test_a_concurrent_insert_with_the_same_key_is_answered_with_the_winner(client: APIClient, monkeypatch: Any) -> None:
    """Two requests race: both miss the replay lookup, the loser's insert hits the unique
    constraint and must answer with the winner's timer, not a 500."""
    winner = _create(client, key="race").json()
    calls = _replay_misses_once(monkeypatch)
    loser = _create(client, key="race")
    assert loser.status_code == 200, loser.content
    assert loser.json()["id"] == winner["id"]
    assert len(calls) == 2
    assert Timer.objects.count() == 1


def test_a_concurrent_insert_with_the_same_key_and_another_body_is_409(client: APIClient, monkeypatch: Any) -> None:
    _create(client, key="race")
    calls = _replay_misses_once(monkeypatch)
    assert _create(client, {**BODY, "name": "other"}, key="race").status_code == 409
    assert len(calls) == 2  # the insert lost the race, then the lookup found the other body
    assert Timer.objects.count() == 1
