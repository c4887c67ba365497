"""The toolkit's MinootsClient against a live server: gunicorn web, a worker and beat."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from minoots_agent_tools import (
    AuthError,
    ConflictError,
    MinootsClient,
    NotFound,
    TimerWaitTimeout,
    ValidationError,
)

from tests.integrations.conftest import Live
from tests.integrations.lossy_proxy import LossyProxy
from timers.models import Timer

pytestmark = pytest.mark.e2e


def test_a_two_second_timer_is_scheduled_and_waited_for_until_settled(live: Live) -> None:
    with live.client(default_region="us-east") as client:
        timer = client.schedule_timer(name="tea", duration="2s", metadata={"pr": 42}, labels={"team": "kitchen"})
        assert timer["status"] in ("scheduled", "armed")
        assert timer["tenantId"] == live.tenant_id and timer["requestedBy"] == "agent:minoots"
        assert timer["labels"] == {"team": "kitchen", "minoots.io/region": "us-east"}
        assert timer["metadata"] == {"pr": 42}
        assert client.get_timer(timer["id"])["id"] == timer["id"]

        done = client.wait_for_timer(timer["id"], timeout=30)

        assert done["status"] == "settled" and done["firedAt"] and done["latenessMs"] is not None
        assert "actionRuns" in done
        kinds = [e["kind"] for e in client.timer_events(timer["id"])]
        assert kinds[0] == "created" and kinds[-1] == "settled" and "fired" in kinds


def test_wait_for_timer_by_polling_and_its_timeout(live: Live) -> None:
    with live.client() as client:
        soon = client.schedule_timer(name="poll", duration="1s")
        assert client.wait_for_timer(soon["id"], timeout=30, use_stream=False, poll_interval=0.2)["status"] == "settled"

        later = client.schedule_timer(name="later", duration="1h")
        with pytest.raises(TimerWaitTimeout) as caught:
            client.wait_for_timer(later["id"], timeout=1)
        assert isinstance(caught.value, TimeoutError)
        assert caught.value.timer is not None and caught.value.timer["status"] == "scheduled"


def test_list_timers_follows_every_page_with_the_filters(live: Live) -> None:
    run = uuid.uuid4().hex[:8]
    with live.client() as client:
        made = [client.schedule_timer(name=f"page-{i}", duration="1h", labels={"run": run}) for i in range(5)]
        client.schedule_timer(name="other", duration="1h")

        listed = list(client.list_timers(labels={"run": run}, limit=2))
        assert [t["id"] for t in listed] == [t["id"] for t in reversed(made)]  # newest first, over 3 pages

        assert [t["name"] for t in client.list_timers(name="page-3")] == ["page-3"]
        assert len(list(client.list_timers(status=["scheduled", "armed"], limit=3))) == 6
        assert list(client.list_timers(status="settled")) == []
        assert list(client.list_timers(fire_before="2000-01-01T00:00:00Z")) == []


def test_reschedule_with_a_stale_if_match_is_a_conflict_and_cancel_is_idempotent(live: Live) -> None:
    with live.client() as client:
        timer = client.schedule_timer(name="move-me", duration="1h")
        version = client.get_timer(timer["id"])["stateVersion"]

        moved = client.reschedule_timer(timer["id"], duration="2h", if_match=version)
        assert moved["stateVersion"] > version and moved["fireAt"] > timer["fireAt"]
        with pytest.raises(ConflictError) as caught:
            client.reschedule_timer(timer["id"], duration="3h", if_match=version)
        assert caught.value.status == 409

        cancelled = client.cancel_timer(timer["id"], reason="not needed")
        assert cancelled["status"] == "cancelled" and cancelled["cancelReason"] == "not needed"
        assert cancelled["cancelledBy"] == "agent:minoots"
        assert client.cancel_timer(timer["id"])["stateVersion"] == cancelled["stateVersion"]
        with pytest.raises(ConflictError):
            client.reschedule_timer(timer["id"], duration="1h")


def test_the_apis_refusals_arrive_as_typed_errors(live: Live) -> None:
    with live.client() as client:
        with pytest.raises(ValidationError) as invalid:
            client.schedule_timer(name="bad", duration="-5s")
        assert invalid.value.status == 400 and invalid.value.message.startswith("duration:")
        assert "duration" in invalid.value.details

        with pytest.raises(NotFound) as missing:
            client.get_timer(str(uuid.uuid4()))
        assert missing.value.status == 404

        first = client.schedule_timer(name="once", duration="1h", idempotency_key="intent-1")
        assert client.schedule_timer(name="once", duration="1h", idempotency_key="intent-1")["id"] == first["id"]
        with pytest.raises(ConflictError) as reused:
            client.schedule_timer(name="another", duration="1h", idempotency_key="intent-1")
        assert reused.value.details["timerId"] == first["id"]

    with MinootsClient(base_url=live.base_url, api_key="mk_wrong", tenant_id=live.tenant_id) as stranger:
        with pytest.raises(AuthError) as denied:
            stranger.get_timer(first["id"])
        assert denied.value.status == 401
    with (
        live.client() as client,
        MinootsClient(base_url=live.base_url, api_key=live.api_key, tenant_id="other") as other,
    ):
        with pytest.raises(AuthError) as forbidden:
            other.schedule_timer(name="x", duration="1h")
        assert forbidden.value.status == 403


def test_a_create_whose_answer_is_lost_is_retried_and_makes_exactly_one_timer(live: Live) -> None:
    proxy = LossyProxy(upstream=live.base_url.removesuffix("/api"), lose=1)
    try:
        with MinootsClient(base_url=f"{proxy.url}/api", api_key=live.api_key, tenant_id=live.tenant_id) as client:
            timer = client.schedule_timer(name="lost-answer", duration="1h")
    finally:
        proxy.close()

    assert proxy.lost == 1 and len(proxy.heads) == 2  # the first answer was dropped, the retry got through
    keys = {
        line.split(":", 1)[1].strip()
        for h in proxy.heads
        for line in h.split("\r\n")
        if line.lower().startswith("idempotency-key:")
    }
    assert len(keys) == 1
    with live.client() as client:
        assert [t["id"] for t in client.list_timers(name="lost-answer")] == [timer["id"]]


def test_stream_events_resumes_after_a_last_event_id(live: Live) -> None:
    with live.client() as client:
        timer = client.schedule_timer(name="streamed", duration="1h")
        created = client.timer_events(timer["id"])[0]
        assert created["kind"] == "created"

        events = client.stream_events(last_event_id=created["id"] - 1)
        try:
            first = next(events)
        finally:
            events.close()
        assert (first.id, first.event, first.timer_id) == (created["id"], "created", timer["id"])

        soon = client.schedule_timer(name="streamed-soon", duration="1s")
        ends = client.stream_events(last_event_id=created["id"], topics=["settled"])
        try:
            settled = next(ends)
        finally:
            ends.close()
        assert (settled.event, settled.timer_id) == ("settled", soon["id"])


def test_the_async_client_does_the_same(live: Live) -> None:
    async def scenario() -> None:
        async with live.client() as client:
            soon = await client.schedule_timer_async(name="async-soon", duration="2s", region="eu-west")
            assert soon["labels"] == {"minoots.io/region": "eu-west"}
            later = await client.schedule_timer_async(name="async-later", duration="1h")
            assert (await client.get_timer_async(later["id"]))["name"] == "async-later"

            names = [t["name"] async for t in client.list_timers_async(limit=1)]
            assert names == ["async-later", "async-soon"]

            with pytest.raises(TimerWaitTimeout):
                await client.wait_for_timer_async(later["id"], timeout=0.5, use_stream=False)
            with pytest.raises(TimerWaitTimeout):
                await client.wait_for_timer_async(later["id"], timeout=0.5)

            version = later["stateVersion"]
            await client.reschedule_timer_async(later["id"], duration="2h", if_match=version)
            with pytest.raises(ConflictError):
                await client.reschedule_timer_async(later["id"], duration="3h", if_match=version)
            assert (await client.cancel_timer_async(later["id"]))["status"] == "cancelled"
            with pytest.raises(NotFound):
                await client.get_timer_async(str(uuid.uuid4()))

            created = (await client.timer_events_async(later["id"]))[0]
            stream = client.stream_events_async(last_event_id=created["id"] - 1)
            first = await anext(stream)
            await stream.aclose()
            assert first.timer_id == later["id"] and first.event == "created"

            done = await client.wait_for_timer_async(soon["id"], timeout=30)
            assert done["status"] == "settled"
            polled = await client.wait_for_timer_async(soon["id"], timeout=5, use_stream=False)
            assert polled["status"] == "settled"

    asyncio.run(scenario())


def test_a_timer_without_a_name_gets_the_default_one(live: Live) -> None:
    with live.client() as client:
        assert client.schedule_timer(duration="1h")["name"].startswith("timer_")


def test_the_original_ecosystem_field_is_accepted(live: Live) -> None:
    with live.client() as client:
        timer = client.schedule_timer(
            name="deploy", duration="1h", ecosystem={"parserator": {"datasetId": "contacts-v3"}}
        )
        assert timer["ecosystem"] == {"parserator": {"datasetId": "contacts-v3"}}
        assert timer["metadata"]["ecosystem"] == {"parserator": {"datasetId": "contacts-v3"}}


def _counting_client() -> tuple[httpx.Client, list[httpx.Request]]:
    sent: list[httpx.Request] = []
    return httpx.Client(timeout=60, event_hooks={"request": [sent.append]}), sent


def test_2500_timers_in_one_call_are_three_batch_requests_and_the_same_call_again_creates_none(live: Live) -> None:
    run = uuid.uuid4().hex[:8]
    timers = [{"name": f"bulk-{i}", "duration": "1h", "idempotency_key": f"{run}-{i}"} for i in range(2500)]
    http, sent = _counting_client()
    with http, live.client(sync_client=http, default_region="us-east") as client:
        first = client.schedule_timers(timers)

        assert [(r.method, r.url.path) for r in sent] == [("POST", "/api/timers/batch")] * 3
        assert [r.status for r in first] == [201] * 2500 and [r.index for r in first] == list(range(2500))
        assert [r.timer["name"] for r in first if r.timer] == [f"bulk-{i}" for i in range(2500)]
        assert first[2499].timer is not None and first[2499].timer["labels"] == {"minoots.io/region": "us-east"}
        assert Timer.objects.filter(tenant_id=live.tenant_id).count() == 2500

        again = client.schedule_timers(timers)

        assert len(sent) == 6
        assert [r.status for r in again] == [200] * 2500
        assert [r.timer["id"] for r in again if r.timer] == [r.timer["id"] for r in first if r.timer]
        assert Timer.objects.filter(tenant_id=live.tenant_id).count() == 2500


def test_schedule_timers_answers_each_invalid_timer_with_its_typed_error(live: Live) -> None:
    tomorrow = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    with live.client() as client:
        used = client.schedule_timer(name="taken", duration="1h", idempotency_key="taken-key")
        results = client.schedule_timers(
            [
                {"name": "ok", "duration": "1h", "region": "eu-west"},
                {"name": "bad", "duration": "soon"},
                {"name": "other body", "duration": "2h", "idempotency_key": "taken-key"},
                {"name": "ok too", "fire_at": tomorrow},
            ]
        )
    ok, bad, conflict, later = results
    assert ok.created and ok.timer is not None and ok.timer["labels"] == {"minoots.io/region": "eu-west"}
    assert later.created and later.timer is not None and datetime.fromisoformat(later.timer["fireAt"]) == tomorrow
    assert bad.status == 400 and type(bad.error) is ValidationError and bad.timer is None
    assert bad.error.message.startswith("duration:") and "duration" in bad.error.details
    assert conflict.status == 409 and type(conflict.error) is ConflictError
    assert conflict.error.details["timerId"] == used["id"]
    assert sorted(Timer.objects.filter(tenant_id=live.tenant_id).values_list("name", flat=True)) == [
        "ok",
        "ok too",
        "taken",
    ]


def test_a_batch_whose_answer_is_lost_is_sent_again_and_makes_each_timer_once(live: Live) -> None:
    proxy = LossyProxy(upstream=live.base_url.removesuffix("/api"), lose=1)
    try:
        with MinootsClient(
            base_url=f"{proxy.url}/api", api_key=live.api_key, tenant_id=live.tenant_id, timeout=60
        ) as client:
            results = client.schedule_timers([{"name": f"lost-{i}", "duration": "1h"} for i in range(1500)])
    finally:
        proxy.close()

    assert proxy.lost == 1 and len(proxy.heads) == 3  # the first chunk twice, then the second
    assert [r.status for r in results] == [200] * 1000 + [201] * 500  # the first try's timers, replayed
    assert Timer.objects.filter(tenant_id=live.tenant_id).count() == 1500


def test_schedule_timers_async_against_the_server(live: Live) -> None:
    async def scenario() -> list[int]:
        async with live.client() as client:
            timers = [{"name": f"async-bulk-{i}", "duration": "1h"} for i in range(5)]
            return [r.status for r in await client.schedule_timers_async(timers, chunk_size=2)]

    assert asyncio.run(scenario()) == [201] * 5
    assert Timer.objects.filter(tenant_id=live.tenant_id).count() == 5
