"""The fast paths of the batch create keep the single create's behaviour: the same validation
and errors per timer, the same stored rows and events, in a bounded number of statements."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

import pytest
from django.db import connection
from django.db.models.signals import post_init
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework import serializers
from rest_framework.test import APIClient

from timers import services
from timers.api.serializers import TimerBatchItemInput
from timers.batch_insert import build_timer
from timers.models import Tenant, Timer, TimerEvent, TimerStatus

URL = "/api/timers/batch"


def _in(seconds: float) -> str:
    return (timezone.now() + timedelta(seconds=seconds)).isoformat()


def _outcome(checker: TimerBatchItemInput, method: str, body: Any) -> tuple[str, Any]:
    try:
        return "ok", getattr(checker, method)(body)
    except serializers.ValidationError as exc:
        return "refused", exc.detail


# --- validation: the fast path is run_validation, or leaves the body to it ----------------------

_STRINGS = st.sampled_from(
    ["ok", "", " ", " padded ", "x" * 64, "x" * 65, "x" * 200, "x" * 201, "nul\x00", "\ud800", "é", "tab\there", "a:b"]
)
_VALUES = st.one_of(
    _STRINGS,
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=10**6),
    st.sampled_from(["5m", "soon", "PT15M", "0s", "400d", "2030-01-01T09:00:00Z", "2030-01-01T09:00:00", "yesterday"]),
    st.sampled_from(
        [{}, {"a": "b"}, {"a": 1}, {"": "x"}, {"k:v": "x"}, {"a": {"b": [1, 2]}}, [], [1], {"x" * 101: "y"}]
    ),
    st.sampled_from(
        [
            {"actions": [{"id": "w", "kind": "webhook", "parameters": {"url": "https://example.com/hook"}}]},
            {"actions": [{"id": "w", "kind": "webhook", "parameters": {"url": "ftp://example.com"}}]},
            {"actions": [{"id": "p", "kind": "agent_prompt", "parameters": {}}]},
            {"actions": "none"},
            {"cloud": {"provider": "aws"}},
            {"agentId": "a1"},
        ]
    ),
)
_KEYS = st.sampled_from(
    [
        "name",
        "duration",
        "fireAt",
        "metadata",
        "labels",
        "actionBundle",
        "agentBinding",
        "ecosystem",
        "requestedBy",
        "tenantId",
        "idempotencyKey",
        "colour",
    ]
)
_BODIES = st.one_of(
    st.dictionaries(_KEYS, _VALUES, max_size=6),
    st.fixed_dictionaries({"name": _STRINGS, "fireAt": st.just("2030-01-01T09:00:00.250+02:00")}),
    st.fixed_dictionaries(
        {"name": st.just("n"), "duration": _VALUES},
        optional={"labels": _VALUES, "metadata": _VALUES, "idempotencyKey": _STRINGS},
    ),
    st.sampled_from([None, 5, "body", [1, 2]]),
)


@pytest.mark.django_db
@hypothesis_settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_BODIES, region=st.sampled_from([None, "eu-west-1"]))
def test_validated_item_answers_every_body_exactly_as_run_validation(body: Any, region: str | None) -> None:
    checker = TimerBatchItemInput(tenant_id="acme", region=region)
    assert _outcome(checker, "validated_item", body) == _outcome(checker, "run_validation", body)


@pytest.mark.django_db
def test_a_plain_timer_body_is_validated_without_drfs_per_field_machinery(monkeypatch: Any) -> None:
    checker = TimerBatchItemInput(tenant_id="acme", region="eu-west-1")
    body = {"name": "plain", "fireAt": "2030-01-01T09:00:00Z", "labels": {"team": "a"}, "idempotencyKey": "k-1"}
    expected = checker.run_validation(dict(body))

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("run_validation was called for a plain body")

    monkeypatch.setattr(TimerBatchItemInput, "run_validation", refuse)
    assert checker.validated_item(dict(body)) == expected


# (An unknown field's message lists the allowed fields, one more in a batch: idempotencyKey.)
INVALID_BODIES: list[Any] = [
    {"name": "bad-duration", "duration": "soon"},
    {"name": "", "duration": "5m"},
    {"name": " ", "duration": "5m"},
    {"name": "x" * 201, "duration": "5m"},
    {"name": 5, "duration": "5m"},
    {"name": None, "duration": "5m"},
    {"name": "both", "duration": "5m", "fireAt": "2030-01-01T09:00:00Z"},
    {"name": "neither"},
    {"name": "no-offset", "fireAt": "2030-01-01T09:00:00"},
    {"name": "labels", "duration": "5m", "labels": {"a": 1}},
    {"name": "metadata", "duration": "5m", "metadata": [1]},
    {"name": "bundle", "duration": "5m", "actionBundle": {"actions": "none"}},
    {"name": "nul\x00", "duration": "5m"},
    {"name": "null-duration", "duration": None},
    {"name": "too-far", "duration": "400d"},
    {"name": "zero", "duration": 0},
]


@pytest.mark.django_db(transaction=True)
def test_each_refused_timer_of_a_batch_gets_the_error_body_a_single_create_answers(client: APIClient) -> None:
    results = client.post(URL, {"timers": INVALID_BODIES}, format="json").json()["results"]
    for body, result in zip(INVALID_BODIES, results, strict=True):
        single = client.post("/api/timers", body, format="json")
        assert single.status_code == 400, body
        assert (result["status"], result["error"]) == (400, single.json()), body
    assert not Timer.objects.exists()


# --- storing: one statement, the same rows and events -------------------------------------------


@pytest.mark.postgres_only(reason="the one-statement insert is the Postgres path")
@pytest.mark.django_db(transaction=True)
def test_a_batch_of_1000_timers_is_stored_in_one_statement_on_postgres(tenant: Tenant) -> None:
    now = timezone.now()
    items = [
        services.BatchItem(spec=services.TimerSpec(name=f"t{i}", fire_at=now + timedelta(seconds=10 + i % 40)))
        for i in range(1000)
    ]
    with CaptureQueriesContext(connection) as queries:
        outcomes = services.timers_create_batch(tenant=tenant, items=items, now=now)
    assert all(o.created for o in outcomes)
    writes = [q["sql"] for q in queries.captured_queries if "INSERT" in q["sql"].upper()]
    assert len(writes) == 1
    assert Timer.objects.count() == 1000
    assert TimerEvent.objects.count() == 2000


@pytest.mark.django_db(transaction=True)
def test_the_events_of_a_batch_follow_its_order_created_before_armed(tenant: Tenant) -> None:
    now = timezone.now()
    specs = [
        services.TimerSpec(name="a", duration=timedelta(seconds=30)),
        services.TimerSpec(name="b", duration=timedelta(hours=2)),
        services.TimerSpec(name="c", fire_at=now + timedelta(seconds=5)),
    ]
    outcomes = services.timers_create_batch(tenant=tenant, items=[services.BatchItem(spec=s) for s in specs], now=now)
    ids = [o.timer.id for o in outcomes if o.timer is not None]
    events = list(TimerEvent.objects.order_by("id").values_list("timer_id", "kind", "state_version", "occurred_at"))
    assert events == [
        (ids[0], "created", 1, now),
        (ids[0], "armed", 2, now),
        (ids[1], "created", 1, now),
        (ids[2], "created", 1, now),
        (ids[2], "armed", 2, now),
    ]


AWKWARD_TEXT = ['quote"d', "back\\slash", "NULL", "{a,b}", "comma, space", "é ü ✓", "tab\tnew\nline", '\\"', ""]


@pytest.mark.django_db(transaction=True)
def test_a_batch_stores_every_value_exactly_as_given(tenant: Tenant) -> None:
    now = timezone.now()
    plus_two = dt_timezone(timedelta(hours=2))
    items = []
    for i, text in enumerate(AWKWARD_TEXT):
        spec = services.TimerSpec(
            name=text or "blank-others",
            fire_at=(now + timedelta(minutes=5 + i)).astimezone(plus_two) if i % 2 else None,
            duration=None if i % 2 else timedelta(milliseconds=1500 + i),
            requested_by=text,
            metadata={"text": text, "nested": {"list": [text, 1, None, True]}} if i % 3 else {},
            labels={"k": text} if i % 2 else {},
            action_bundle={"actions": [], "note": text} if i % 2 else None,
            agent_binding={"target": text} if i % 3 == 1 else None,
        )
        items.append(services.BatchItem(spec=spec, idempotency_key=f"key-{text}-{i}", fingerprint=f"fp{i}"))
    outcomes = services.timers_create_batch(tenant=tenant, items=items, now=now)
    for item, outcome in zip(items, outcomes, strict=True):
        assert outcome.created and outcome.timer is not None
        stored = Timer.objects.get(pk=outcome.timer.id)
        spec = item.spec
        for name in ("name", "requested_by", "metadata", "labels", "action_bundle", "agent_binding"):
            assert getattr(stored, name) == getattr(spec, name), name
        assert (stored.idempotency_key, stored.request_hash) == (item.idempotency_key, item.fingerprint)
        assert stored.fire_at == outcome.timer.fire_at and stored.created_at == now
        assert stored.duration_ms == (stored.fire_at - now) // timedelta(milliseconds=1)
        created = TimerEvent.objects.get(timer_id=stored.id, kind="created")
        assert created.data == {"fireAt": outcome.timer.fire_at.isoformat()}
        # What the service answers is the stored timer.
        for field in Timer._meta.concrete_fields:
            assert getattr(outcome.timer, field.attname) == getattr(stored, field.attname), field.attname


# --- building timers ----------------------------------------------------------------------------


def _values() -> dict[str, Any]:
    now = datetime(2030, 1, 1, 9, tzinfo=UTC)
    values = {f.attname: getattr(Timer(), f.attname) for f in Timer._meta.concrete_fields}
    values.update(
        id=Timer().id,
        tenant_id="acme",
        name="n",
        status=TimerStatus.ARMED,
        duration_ms=5,
        created_at=now,
        fire_at=now + timedelta(milliseconds=5),
        metadata={"a": 1},
        labels={"b": "c"},
        state_version=2,
        idempotency_key="k",
        request_hash="h",
    )
    return values


def test_build_timer_gives_what_the_model_constructor_gives() -> None:
    values = _values()
    built, constructed = build_timer(dict(values)), Timer(**values)
    for name in values:
        assert getattr(built, name) == getattr(constructed, name), name
    assert built._state.adding and built._state.db is None
    assert json.dumps(built.metadata) == json.dumps(constructed.metadata)


def test_build_timer_runs_the_models_init_signals_when_something_listens() -> None:
    seen: list[Timer] = []

    def receiver(sender: Any, instance: Timer, **kwargs: Any) -> None:
        seen.append(instance)

    values = _values()
    post_init.connect(receiver, sender=Timer)
    try:
        built = build_timer(values)
    finally:
        post_init.disconnect(receiver, sender=Timer)
    assert seen == [built]
