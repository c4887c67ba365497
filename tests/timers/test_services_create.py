"""``timer_create`` owns the rules on when a timer fires, for every caller: called directly here,
and once through the API to show the refusals reach clients in the one error shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.assertions import assert_error
from timers import services
from timers.models import Tenant, Timer, TimerEvent, TimerStatus
from timers.services import TimerSpec, ValidationFailed

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def _refused(tenant: Tenant, spec: TimerSpec, **kwargs: Any) -> ValidationFailed:
    """The refusal of creating ``spec`` at NOW; asserts that nothing was stored."""
    with pytest.raises(ValidationFailed) as caught:
        services.timer_create(tenant=tenant, spec=spec, now=NOW, **kwargs)
    assert not Timer.objects.exists()
    assert not TimerEvent.objects.exists()
    return caught.value


@pytest.mark.parametrize("duration", [timedelta(0), timedelta(microseconds=-1), timedelta(minutes=-5)])
def test_a_zero_or_negative_duration_is_refused_naming_duration(tenant: Tenant, duration: timedelta) -> None:
    error = _refused(tenant, TimerSpec(name="t", duration=duration))
    assert (error.field, error.reason) == ("duration", "must be positive")
    assert error.status_code == 400
    assert str(error) == "duration: must be positive"
    assert error.details == {"duration": ["must be positive"]}


@pytest.mark.parametrize("fire_at", [NOW, NOW - timedelta(milliseconds=1), NOW - timedelta(days=400)])
def test_a_fire_at_not_in_the_future_is_refused_for_the_api(tenant: Tenant, fire_at: datetime) -> None:
    error = _refused(tenant, TimerSpec(name="t", fire_at=fire_at), refuse_past=True)
    assert (error.field, error.reason) == ("fireAt", "must be in the future")


def test_a_past_fire_at_from_an_internal_caller_means_now_and_the_timer_is_armed(tenant: Tenant) -> None:
    timer, created = services.timer_create(
        tenant=tenant, spec=TimerSpec(name="t", fire_at=NOW - timedelta(seconds=3)), now=NOW
    )
    assert created
    timer.refresh_from_db()
    assert (timer.created_at, timer.fire_at, timer.duration_ms) == (NOW, NOW, 0)
    assert timer.status == TimerStatus.ARMED


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (TimerSpec(name="t", duration=timedelta(days=365, milliseconds=1)), "duration"),
        (TimerSpec(name="t", fire_at=NOW + timedelta(days=365, milliseconds=1)), "fireAt"),
        (TimerSpec(name="t", fire_at=datetime(9999, 12, 31, tzinfo=UTC)), "fireAt"),
    ],
)
def test_a_timer_beyond_the_max_horizon_is_refused_naming_its_field(
    tenant: Tenant, spec: TimerSpec, field: str
) -> None:
    error = _refused(tenant, spec, refuse_past=True)
    assert (error.field, error.reason) == (field, "must be at most 365 days ahead (MINOOTS_MAX_HORIZON)")


def test_a_duration_past_year_9999_is_refused_as_too_large(tenant: Tenant) -> None:
    error = _refused(tenant, TimerSpec(name="t", duration=timedelta(days=999_999_999)))
    assert (error.field, error.reason) == ("duration", "is too large")


@pytest.mark.parametrize(
    "spec", [TimerSpec(name="t", duration=timedelta(days=365)), TimerSpec(name="t", fire_at=NOW + timedelta(days=365))]
)
def test_a_timer_exactly_at_the_max_horizon_is_stored(tenant: Tenant, spec: TimerSpec) -> None:
    timer, _ = services.timer_create(tenant=tenant, spec=spec, now=NOW, refuse_past=True)
    assert timer.fire_at == NOW + timedelta(days=365)


def test_the_horizon_follows_the_setting(tenant: Tenant, settings: Any) -> None:
    settings.MINOOTS_MAX_HORIZON = timedelta(days=2)
    error = _refused(tenant, TimerSpec(name="t", duration=timedelta(days=2, seconds=1)))
    assert error.reason == "must be at most 2 days ahead (MINOOTS_MAX_HORIZON)"


@pytest.mark.parametrize(
    ("spec", "fire_at", "duration_ms"),
    [
        (TimerSpec(name="t", duration=timedelta(milliseconds=1001)), NOW + timedelta(milliseconds=1001), 1001),
        # Sub-millisecond parts stay in fire_at; duration_ms counts whole milliseconds.
        (TimerSpec(name="t", duration=timedelta(microseconds=1500)), NOW + timedelta(microseconds=1500), 1),
        (
            TimerSpec(name="t", fire_at=NOW + timedelta(hours=2, milliseconds=7)),
            NOW + timedelta(hours=2, milliseconds=7),
            7_200_007,
        ),
    ],
)
def test_fire_at_and_duration_ms_are_computed_exactly_from_created_at(
    tenant: Tenant, spec: TimerSpec, fire_at: datetime, duration_ms: int
) -> None:
    timer, _ = services.timer_create(tenant=tenant, spec=spec, now=NOW, refuse_past=True)
    timer.refresh_from_db()
    assert (timer.created_at, timer.fire_at, timer.duration_ms) == (NOW, fire_at, duration_ms)
    assert (timer.fire_at - timer.created_at) // timedelta(milliseconds=1) == timer.duration_ms


@pytest.mark.parametrize("when", [{}, {"duration": timedelta(seconds=5), "fire_at": NOW}])
def test_a_spec_needs_exactly_one_of_duration_and_fire_at(when: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        TimerSpec(name="t", **when)
    assert (caught.value.field, caught.value.reason) == ("duration", "give exactly one of 'duration' or 'fireAt'")


def test_a_spec_refuses_a_naive_fire_at() -> None:
    with pytest.raises(ValueError, match="aware"):
        TimerSpec(name="t", fire_at=datetime(2030, 1, 1, 12, 0))


def test_a_replayed_request_still_passes_the_rules(tenant: Tenant) -> None:
    """An Idempotency-Key retry of a fireAt create after that moment is refused, not replayed."""
    fire_at = NOW + timedelta(minutes=1)
    first, _ = services.timer_create(
        tenant=tenant, spec=TimerSpec(name="t", fire_at=fire_at), idempotency_key="k", fingerprint="f", now=NOW
    )
    with pytest.raises(ValidationFailed, match="fireAt: must be in the future"):
        services.timer_create(
            tenant=tenant,
            spec=TimerSpec(name="t", fire_at=fire_at),
            idempotency_key="k",
            fingerprint="f",
            now=fire_at + timedelta(seconds=1),
            refuse_past=True,
        )
    assert list(Timer.objects.values_list("pk", flat=True)) == [first.pk]


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"duration": "0s"}, "duration", "must be positive"),
        ({"duration": "366d"}, "duration", "must be at most 365 days ahead (MINOOTS_MAX_HORIZON)"),
        ({"fireAt": "2001-01-01T00:00:00Z"}, "fireAt", "must be in the future"),
        ({"fireAt": "2999-01-01T00:00:00Z"}, "fireAt", "must be at most 365 days ahead (MINOOTS_MAX_HORIZON)"),
    ],
)
def test_the_api_answers_a_refusal_of_the_rules_like_a_field_error(
    client: APIClient, body: dict[str, Any], field: str, reason: str
) -> None:
    response = client.post("/api/timers", {"name": "t", **body}, format="json")
    assert assert_error(response, 400) == {"message": f"{field}: {reason}", "details": {field: [reason]}}
    assert not Timer.objects.exists()


BIG = "x" * (64 * 1024)


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        (TimerSpec(name="t", duration=timedelta(minutes=1), metadata={"blob": BIG}), "metadata", "64 KiB"),
        (
            TimerSpec(
                name="t",
                duration=timedelta(minutes=1),
                action_bundle={"actions": [{"id": "a", "kind": "file", "parameters": {"content": BIG}}]},
            ),
            "actionBundle",
            "MINOOTS_MAX_ACTION_BUNDLE_BYTES",
        ),
        (
            TimerSpec(name="t", duration=timedelta(minutes=1), agent_binding={"payloadTemplate": BIG}),
            "agentBinding",
            "64 KiB",
        ),
    ],
)
def test_oversized_metadata_bundle_or_agent_binding_is_refused_for_every_caller(
    tenant: Tenant, spec: TimerSpec, field: str, reason: str
) -> None:
    """Not only the API's serializer: a command or the batch create calls timer_create directly."""
    error = _refused(tenant, spec)
    assert error.field == field
    assert reason in error.reason


def test_an_agent_binding_over_64_kib_is_a_400_naming_agent_binding(client: APIClient) -> None:
    response = client.post(
        "/api/timers", {"name": "t", "duration": "1m", "agentBinding": {"payloadTemplate": BIG}}, format="json"
    )
    assert_error(response, 400, field="agentBinding", contains="64 KiB")
    assert not Timer.objects.exists()
