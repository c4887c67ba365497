"""POST /api/timers/batch: many creates in one request, each answered on its own, in order."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.utils import timezone
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from tests.assertions import assert_error
from tests.broker import queued_tasks
from tests.timers.conftest import MakeClient
from timers import services
from timers.models import Role, Tenant, Timer, TimerEvent, TimerStatus
from timers.ticks import bucket_of, tick_eta

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/timers/batch"


def _batch(client: APIClient, timers: Any = None, **envelope: Any) -> Any:
    return client.post(URL, {"timers": timers, **envelope}, format="json")


def _results(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.content
    results: list[dict[str, Any]] = response.json()["results"]
    assert [r["index"] for r in results] == list(range(len(results)))
    return results


def _statuses(response: Any) -> list[int]:
    return [r["status"] for r in _results(response)]


def _in(seconds: float) -> str:
    return (timezone.now() + timedelta(seconds=seconds)).isoformat()


def _limit(tenant: Tenant, *, active: int | None = None, daily: int | None = None) -> None:
    if active is not None:
        tenant.max_active_timers = active
    if daily is not None:
        tenant.max_creates_per_day = daily
    tenant.save()


# --- creating ---------------------------------------------------------------------------------


def test_a_batch_creates_each_timer_and_answers_them_in_request_order(client: APIClient) -> None:
    response = _batch(
        client,
        [
            {"name": "a", "duration": "30s"},
            {"name": "b", "duration": "2h", "labels": {"env": "prod"}},
            {"name": "c", "fireAt": _in(600)},
        ],
    )
    results = _results(response)
    assert [r["status"] for r in results] == [201, 201, 201]
    assert [r["timer"]["name"] for r in results] == ["a", "b", "c"]
    assert [r["timer"]["status"] for r in results] == ["armed", "scheduled", "scheduled"]
    assert results[1]["timer"]["labels"] == {"env": "prod"}
    single = client.get(f"/api/timers/{results[0]['timer']['id']}").json()
    assert set(results[0]["timer"]) <= set(single)
    assert {k: single[k] for k in results[0]["timer"]} == results[0]["timer"]
    assert Timer.objects.count() == 3


def test_each_timer_gets_the_events_a_single_create_writes(client: APIClient) -> None:
    results = _results(_batch(client, [{"name": "soon", "duration": "30s"}, {"name": "later", "duration": "1h"}]))
    soon, later = (r["timer"]["id"] for r in results)
    kinds = {
        timer_id: list(
            TimerEvent.objects.filter(timer_id=timer_id).order_by("state_version").values_list("kind", "state_version")
        )
        for timer_id in (soon, later)
    }
    assert kinds[soon] == [("created", 1), ("armed", 2)]
    assert kinds[later] == [("created", 1)]
    assert [r["timer"]["stateVersion"] for r in results] == [2, 1]


def test_invalid_timers_are_each_a_400_naming_the_field_and_the_valid_ones_are_created(client: APIClient) -> None:
    response = _batch(
        client,
        [
            {"name": "ok-1", "duration": "5m"},
            {"name": "bad-duration", "duration": "soon"},
            {"name": "unknown-field", "duration": "5m", "colour": "blue"},
            5,
            {"name": "past", "fireAt": _in(-60)},
            {"name": "both", "duration": "5m", "fireAt": _in(60)},
            {"name": "nul\x00", "duration": "5m"},
            {"name": "ok-2", "duration": "5m"},
        ],
    )
    results = _results(response)
    assert [r["status"] for r in results] == [201, 400, 400, 400, 400, 400, 400, 201]
    errors = [r["error"] for r in results if r["status"] == 400]
    assert [e["message"].split(":")[0] for e in errors] == [
        "duration",
        "colour",
        "The body must be a JSON object",
        "fireAt",
        "duration",
        "name",
    ]
    assert errors[0]["details"] == {"duration": [errors[0]["message"].removeprefix("duration: ")]}
    assert errors[3]["message"] == "fireAt: must be in the future"
    assert sorted(Timer.objects.values_list("name", flat=True)) == ["ok-1", "ok-2"]


def test_a_timer_that_is_not_an_object_says_so(client: APIClient) -> None:
    (result,) = _results(_batch(client, [[1, 2]]))
    assert result["status"] == 400
    assert result["error"]["message"] == "The body must be a JSON object"


def test_a_timer_naming_another_tenant_is_a_403_and_the_others_are_created(client: APIClient) -> None:
    response = _batch(
        client,
        [
            {"name": "mine", "duration": "5m", "tenantId": "acme"},
            {"name": "theirs", "duration": "5m", "tenantId": "globex"},
        ],
    )
    results = _results(response)
    assert [r["status"] for r in results] == [201, 403]
    assert "tenantId" in results[1]["error"]["message"]
    assert list(Timer.objects.values_list("name", "tenant_id")) == [("mine", "acme")]


def test_an_action_bundle_the_runners_refuse_is_that_timers_400(client: APIClient) -> None:
    bundle = {"actions": [{"id": "x", "kind": "webhook", "parameters": {"url": "ftp://example.com"}}]}
    statuses = _statuses(
        _batch(
            client, [{"name": "hook", "duration": "5m", "actionBundle": bundle}, {"name": "plain", "duration": "5m"}]
        )
    )
    assert statuses == [400, 201]


# --- the envelope ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([{"name": "a", "duration": "5m"}], "non_field_errors"),
        ({"timers": {"name": "a", "duration": "5m"}}, "timers"),
        ({"timers": []}, "timers"),
        ({}, "timers"),
        ({"timers": [{"name": "a", "duration": "5m"}], "extra": 1}, "extra"),
    ],
)
def test_a_malformed_envelope_is_a_400_and_creates_nothing(client: APIClient, body: Any, field: str) -> None:
    response = client.post(URL, body, format="json")
    assert_error(response, 400)
    if field != "non_field_errors":
        assert field in response.json()["details"]
    assert not Timer.objects.exists()


def test_more_timers_than_minoots_batch_max_is_a_400_and_creates_nothing(client: APIClient, settings: Any) -> None:
    settings.MINOOTS_BATCH_MAX = 3
    body = [{"name": f"t{i}", "duration": "5m"} for i in range(4)]
    response = _batch(client, body)
    assert_error(response, 400, field="timers", contains="at most 3")
    assert not Timer.objects.exists()
    assert _statuses(_batch(client, body[:3])) == [201, 201, 201]


def test_a_batch_needs_the_timer_write_role(make_client: MakeClient, anon_client: APIClient) -> None:
    reader = make_client(roles=[Role.TIMER_READ])
    assert_error(_batch(reader, [{"name": "a", "duration": "5m"}]), 403)
    assert_error(_batch(anon_client, [{"name": "a", "duration": "5m"}]), 401)
    assert not Timer.objects.exists()


def test_timers_of_a_batch_belong_to_the_credentials_tenant_only(client: APIClient, other_client: APIClient) -> None:
    (result,) = _results(_batch(client, [{"name": "a", "duration": "5m"}]))
    assert other_client.get(f"/api/timers/{result['timer']['id']}").status_code == 404
    assert Timer.objects.get().tenant_id == "acme"


# --- idempotencyKey --------------------------------------------------------------------------


def test_a_repeated_batch_replays_its_keyed_timers_with_200(client: APIClient) -> None:
    body = [
        {"name": "a", "duration": "5m", "idempotencyKey": "k-a"},
        {"name": "b", "duration": "5m", "idempotencyKey": "k-b"},
    ]
    first = _results(_batch(client, body))
    again = _results(_batch(client, body))
    assert [r["status"] for r in first] == [201, 201]
    assert [r["status"] for r in again] == [200, 200]
    assert [r["timer"]["id"] for r in again] == [r["timer"]["id"] for r in first]
    assert Timer.objects.count() == 2


def test_a_key_reused_with_another_body_is_that_timers_409(client: APIClient) -> None:
    (first,) = _results(_batch(client, [{"name": "a", "duration": "5m", "idempotencyKey": "k"}]))
    results = _results(
        _batch(client, [{"name": "a", "duration": "10m", "idempotencyKey": "k"}, {"name": "new", "duration": "5m"}])
    )
    assert [r["status"] for r in results] == [409, 201]
    assert results[0]["error"]["details"] == {"idempotencyKey": "k", "timerId": first["timer"]["id"]}
    assert "Idempotency-Key" in results[0]["error"]["message"]


def test_a_key_repeated_within_a_batch_is_the_first_timer_replayed_or_a_409(client: APIClient) -> None:
    body = {"name": "a", "duration": "5m", "idempotencyKey": "k"}
    results = _results(_batch(client, [body, body, {**body, "name": "other"}]))
    assert [r["status"] for r in results] == [201, 200, 409]
    assert results[1]["timer"]["id"] == results[0]["timer"]["id"]
    assert results[2]["error"]["details"]["timerId"] == results[0]["timer"]["id"]
    assert Timer.objects.count() == 1


def test_a_batch_replays_a_single_create_with_the_same_key_and_body(client: APIClient) -> None:
    single = client.post("/api/timers", {"name": "a", "duration": "5m"}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    (result,) = _results(_batch(client, [{"name": "a", "duration": "5m", "idempotencyKey": "k"}]))
    assert result["status"] == 200
    assert result["timer"]["id"] == single.json()["id"]


def test_an_expired_key_creates_a_new_timer(client: APIClient) -> None:
    (first,) = _results(_batch(client, [{"name": "a", "duration": "5m", "idempotencyKey": "k"}]))
    Timer.objects.filter(pk=first["timer"]["id"]).update(created_at=timezone.now() - timedelta(hours=25))
    (again,) = _results(_batch(client, [{"name": "a", "duration": "5m", "idempotencyKey": "k"}]))
    assert again["status"] == 201
    assert again["timer"]["id"] != first["timer"]["id"]


@pytest.mark.parametrize("key", ["", "é", "x" * 201, "tab\there"])
def test_an_invalid_idempotency_key_is_that_timers_400(client: APIClient, key: str) -> None:
    results = _results(
        _batch(client, [{"name": "a", "duration": "5m", "idempotencyKey": key}, {"name": "b", "duration": "5m"}])
    )
    assert [r["status"] for r in results] == [400, 201]
    assert results[0]["error"]["message"].startswith("idempotencyKey:")


def test_an_invalid_timer_does_not_take_its_key(client: APIClient) -> None:
    assert _statuses(_batch(client, [{"name": "a", "duration": "soon", "idempotencyKey": "k"}])) == [400]
    assert _statuses(_batch(client, [{"name": "a", "duration": "5m", "idempotencyKey": "k"}])) == [201]


def test_a_concurrent_insert_of_a_key_is_answered_with_the_winners_timer(client: APIClient, monkeypatch: Any) -> None:
    """Another request stores the key between this batch's lookup and its insert: the batch's
    transaction is retried, and the key replays the winner's timer instead of a 500."""
    winner = client.post(
        "/api/timers", {"name": "a", "duration": "5m"}, format="json", HTTP_IDEMPOTENCY_KEY="race"
    ).json()
    real_filter = Timer.objects.filter
    lookups: list[int] = []

    def miss_first_lookup(*args: Any, **kwargs: Any) -> Any:
        if "idempotency_key__in" in kwargs:
            lookups.append(1)
            if len(lookups) == 1:
                return real_filter(pk__in=[])
        return real_filter(*args, **kwargs)

    monkeypatch.setattr(Timer.objects, "filter", miss_first_lookup)
    results = _results(
        _batch(client, [{"name": "a", "duration": "5m", "idempotencyKey": "race"}, {"name": "b", "duration": "5m"}])
    )
    assert [r["status"] for r in results] == [200, 201]
    assert results[0]["timer"]["id"] == winner["id"]
    assert len(lookups) == 2
    assert Timer.objects.count() == 2


# --- quotas ----------------------------------------------------------------------------------


def test_quota_exhaustion_mid_batch_creates_the_first_timers_that_fit_and_refuses_the_rest(
    client: APIClient, tenant: Tenant
) -> None:
    _limit(tenant, active=3)
    client.post("/api/timers", {"name": "existing", "duration": "5m"}, format="json")
    body = [{"name": f"t{i}", "duration": "5m"} for i in range(4)]
    body.insert(1, {"name": "invalid", "duration": "soon"})
    results = _results(_batch(client, body))
    assert [r["status"] for r in results] == [201, 400, 201, 429, 429]
    assert results[3]["error"]["limitType"] == "burst"
    assert results[3]["error"]["message"] == "Tenant 'acme' has 3 active timers, its limit"
    assert Timer.objects.count() == 3
    assert client.post("/api/timers", {"name": "one-more", "duration": "5m"}, format="json").status_code == 429


def test_the_daily_quota_refuses_the_timers_beyond_it(client: APIClient, tenant: Tenant) -> None:
    _limit(tenant, daily=2)
    results = _results(_batch(client, [{"name": f"t{i}", "duration": "5m"} for i in range(3)]))
    assert [r["status"] for r in results] == [201, 201, 429]
    assert results[2]["error"]["limitType"] == "daily"


def test_replays_count_against_no_quota(client: APIClient, tenant: Tenant) -> None:
    _limit(tenant, active=1)
    body = [{"name": "a", "duration": "5m", "idempotencyKey": "k"}]
    assert _statuses(_batch(client, body)) == [201]
    assert _statuses(_batch(client, body + [{"name": "b", "duration": "5m"}])) == [200, 429]


def test_a_batch_counts_its_creates_in_the_metrics(client: APIClient) -> None:
    def created() -> float:
        return REGISTRY.get_sample_value("minoots_timers_created_total", {"tenant": "acme"}) or 0.0

    before = created()
    _batch(
        client, [{"name": "a", "duration": "5m"}, {"name": "b", "duration": "soon"}, {"name": "c", "duration": "1h"}]
    )
    assert created() - before == 2


# --- ticks and firing ------------------------------------------------------------------------


def test_ticks_are_published_once_per_bucket_after_commit(client: APIClient, broker: redis.Redis) -> None:
    first, second = timezone.now() + timedelta(seconds=20), timezone.now() + timedelta(seconds=40)
    body = [{"name": f"a{i}", "fireAt": first.isoformat()} for i in range(5)]
    body += [{"name": f"b{i}", "fireAt": second.isoformat()} for i in range(3)]
    body += [{"name": "beyond-the-horizon", "duration": "1h"}]
    assert _statuses(_batch(client, body)) == [201] * 9
    ticks = queued_tasks(broker, "timers", task="timers.fire_due")
    assert len(ticks) == 2
    assert sorted(t.eta for t in ticks if t.eta) == [tick_eta(bucket_of(first)), tick_eta(bucket_of(second))]
    # A second batch into the same buckets publishes nothing more.
    assert _statuses(_batch(client, body[:1] + body[5:6])) == [201, 201]
    assert len(queued_tasks(broker, "timers", task="timers.fire_due")) == 2


def test_timers_of_a_batch_fire_and_settle(client: APIClient) -> None:
    results = _results(_batch(client, [{"name": f"t{i}", "duration": "50ms"} for i in range(20)]))
    time.sleep(0.1)
    claimed = services.timers_fire()
    assert {str(c.id) for c in claimed} == {r["timer"]["id"] for r in results}
    assert set(Timer.objects.values_list("status", flat=True)) == {TimerStatus.SETTLED}


# --- the service ------------------------------------------------------------------------------


def test_the_service_answers_each_item_as_timer_create_would(tenant: Tenant) -> None:
    now = timezone.now()
    items = [
        services.BatchItem(spec=services.TimerSpec(name="ok", duration=timedelta(minutes=5))),
        services.BatchItem(spec=services.TimerSpec(name="zero", duration=timedelta(0))),
        services.BatchItem(spec=services.TimerSpec(name="past", fire_at=now - timedelta(seconds=1))),
    ]
    outcomes = services.timers_create_batch(tenant=tenant, items=items, now=now)
    assert outcomes[0].created and outcomes[0].timer is not None
    assert isinstance(outcomes[1].error, services.ValidationFailed)
    assert outcomes[1].error.message == "duration: must be positive"
    # An internal caller's past fireAt means now, as with timer_create.
    assert outcomes[2].timer is not None and outcomes[2].timer.fire_at == now
    stored = Timer.objects.get(name="ok")
    assert stored.created_at == now and stored.duration_ms == 300_000 and stored.fire_at == now + timedelta(minutes=5)


def test_the_batch_example_creates_timers_shaped_like_the_response_example(client: APIClient) -> None:
    from drf_spectacular.generators import SchemaGenerator

    schema: dict[str, Any] = SchemaGenerator().get_schema(request=None, public=True)
    op = schema["paths"]["/api/timers/batch"]["post"]
    (request,) = [e["value"] for e in op["requestBody"]["content"]["application/json"]["examples"].values()]
    (answer,) = [e["value"] for e in op["responses"]["200"]["content"]["application/json"]["examples"].values()]
    results = _results(_batch(client, **request))
    assert [r["status"] for r in results] == [201, 201, 201]
    assert list(results[0]) == list(answer["results"][0])
    assert list(results[0]["timer"]) == list(answer["results"][0]["timer"])
    assert set(answer["results"][2]) == {"index", "status", "error"}


def test_timer_json_renders_a_timer_in_every_state_exactly_as_timer_output(client: APIClient) -> None:
    from timers.serializers import TimerOutput, timer_json

    bundle = {"actions": [{"id": "n", "kind": "webhook", "parameters": {"url": "https://example.com/h"}}]}
    results = _results(
        _batch(
            client,
            [
                {"name": "plain", "duration": "1500ms"},
                {"name": "eco", "duration": "5m", "ecosystem": {"parserator": {"datasetId": "contacts-v3"}}},
                {"name": "hook", "fireAt": _in(3600), "actionBundle": bundle, "agentBinding": {"agentId": "a1"}},
                {"name": "cancelled", "duration": "5m"},
                {"name": "fired", "duration": "5m"},
            ],
        )
    )
    cancelled, fired = results[3]["timer"]["id"], results[4]["timer"]["id"]
    client.post(f"/api/timers/{cancelled}/cancel", {"reason": "no longer needed"}, format="json")
    now = timezone.now().replace(microsecond=0)  # isoformat() then has no fraction: both must agree
    Timer.objects.filter(pk=fired).update(
        status="failed", fired_at=now, lateness_ms=7, settled_at=now, failure_reason="x"
    )
    for timer in Timer.objects.all():
        assert timer_json(timer) == TimerOutput(timer).data
    assert results[1]["timer"]["ecosystem"] == {"parserator": {"datasetId": "contacts-v3"}}


def test_buckets_whose_tick_the_broker_refused_keep_no_marker_so_the_reconciler_publishes_them(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core.cache import cache

    from timers import tick_wire, ticks

    def refuse(*_: Any, **__: Any) -> None:
        raise ConnectionError("broker down")

    fire_ats = [timezone.now() + timedelta(seconds=30, milliseconds=10 * i) for i in range(5)]
    monkeypatch.setattr(tick_wire, "mark_and_push", refuse)  # the broker's Redis is gone
    monkeypatch.setattr(ticks, "publish", refuse)
    monkeypatch.setattr(ticks, "publish_each", refuse)
    assert ticks.ensure_ticks(fire_ats) == 0
    assert cache.get_many([ticks._marker_key(ticks.bucket_of(f)) for f in fire_ats]) == {}
    monkeypatch.undo()
    assert ticks.ensure_ticks(fire_ats) == 5
    assert ticks.ensure_ticks(fire_ats) == 0  # marked now


def test_a_staff_session_names_the_batchs_tenant_and_its_timers_cannot_name_another(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    from django.contrib.auth import get_user_model

    staff = APIClient()
    staff.force_login(get_user_model().objects.create_user("ops", is_staff=True))
    assert_error(_batch(staff, [{"name": "a", "duration": "5m"}]), 400, field="tenantId")
    results = _results(
        _batch(
            staff,
            [{"name": "a", "duration": "5m"}, {"name": "b", "duration": "5m", "tenantId": "globex"}],
            tenantId="acme",
        )
    )
    assert [r["status"] for r in results] == [201, 403]
    assert list(Timer.objects.values_list("name", "tenant_id")) == [("a", "acme")]
