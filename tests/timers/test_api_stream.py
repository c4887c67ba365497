"""Server-sent events of the caller's tenant."""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tests.assertions import assert_error
from tests.factories import api_client, make_api_key
from timers.models import StreamLease, Tenant

pytestmark = pytest.mark.django_db(transaction=True)


def read_stream(response: Any) -> list[dict[str, Any]]:
    text = b"".join(response.streaming_content).decode()
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "data" in fields:
            events.append({**json.loads(fields["data"]), "id": int(fields["id"]), "event": fields["event"]})
    return events


def test_stream_replays_the_tenants_events_after_the_given_id_and_hides_other_tenants(
    client: APIClient, other_tenant: Tenant, settings: Any
) -> None:
    settings.MINOOTS_STREAM_MAX_SECONDS = 0.6
    mine = client.post("/api/timers", {"name": "mine", "duration": "5m"}, format="json").json()
    other = api_client(api_key=make_api_key(tenant=other_tenant))
    theirs = other.post("/api/timers", {"name": "theirs", "duration": "5m"}, format="json").json()

    response = client.get("/api/timers/stream?after=0", HTTP_ACCEPT="text/event-stream")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    events = read_stream(response)
    assert [(e["timerId"], e["event"]) for e in events] == [(mine["id"], "created")]
    assert theirs["id"] not in {e["timerId"] for e in events}

    cancelled = client.post(f"/api/timers/{mine['id']}/cancel", {}, format="json")
    assert cancelled.status_code == 200
    resumed = read_stream(client.get("/api/timers/stream", HTTP_LAST_EVENT_ID=str(events[-1]["id"])))
    assert [e["event"] for e in resumed] == ["cancelled"]


def test_stream_requires_credentials(anon_client: APIClient) -> None:
    assert_error(anon_client.get("/api/timers/stream"), 401)


def test_streams_beyond_the_per_process_limit_get_a_503_until_one_closes(client: APIClient, settings: Any) -> None:
    settings.MINOOTS_STREAMS_PER_PROCESS = 1
    settings.MINOOTS_STREAM_MAX_SECONDS = 0.2
    first = client.get("/api/timers/stream")
    assert first.status_code == 200

    second = client.get("/api/timers/stream")
    assert_error(second, 503, contains="Too many open event streams")
    assert second["Retry-After"] == "5"

    first.close()  # what the server does when the response ends
    third = client.get("/api/timers/stream")
    assert third.status_code == 200
    third.close()


@pytest.mark.parametrize("after", ["abc", "1e309", "-1", "1" + "0" * 30, "1" + "0" * 5000, "2.5"])
def test_an_event_id_that_is_not_one_is_400_naming_after(client: APIClient, settings: Any, after: str) -> None:
    settings.MINOOTS_STREAM_MAX_SECONDS = 0.2
    assert_error(client.get("/api/timers/stream", {"after": after}), 400, field="after")
    assert_error(client.get("/api/timers/stream", HTTP_LAST_EVENT_ID=after), 400, field="after")


def test_the_largest_event_id_is_a_stream_with_no_events(client: APIClient, settings: Any) -> None:
    settings.MINOOTS_STREAM_MAX_SECONDS = 0.2
    client.post("/api/timers", {"name": "t", "duration": "5m"}, format="json")
    response = client.get("/api/timers/stream", {"after": str(2**63 - 1)})
    assert response.status_code == 200
    assert read_stream(response) == []


def test_a_stream_refused_at_the_cap_is_logged_once_at_warning_not_error(
    client: APIClient, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.MINOOTS_STREAMS_PER_PROCESS = 1
    settings.MINOOTS_STREAM_MAX_SECONDS = 0.2
    first = client.get("/api/timers/stream")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert_error(client.get("/api/timers/stream"), 503)
    first.close()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [(r.name, r.getMessage()) for r in caplog.records]
    assert "event stream" in warnings[0].getMessage()
    assert getattr(warnings[0], "tenant", None) == "acme"


def test_a_tenants_streams_beyond_its_cap_get_a_429_while_other_tenants_still_stream(
    client: APIClient, tenant: Tenant, other_tenant: Tenant, settings: Any
) -> None:
    settings.MINOOTS_STREAMS_PER_TENANT = 2
    settings.MINOOTS_STREAM_MAX_SECONDS = 0.2
    first, second = client.get("/api/timers/stream"), client.get("/api/timers/stream")
    assert (first.status_code, second.status_code) == (200, 200)

    third = client.get("/api/timers/stream")
    assert assert_error(third, 429, contains="Tenant acme already has 2 open event streams")["limitType"] == "streams"
    assert third["Retry-After"] == "5"
    theirs = api_client(api_key=make_api_key(tenant=other_tenant)).get("/api/timers/stream")
    assert theirs.status_code == 200
    theirs.close()

    first.close()  # its lease goes with it
    assert StreamLease.objects.filter(tenant=tenant).count() == 1
    again = client.get("/api/timers/stream")
    assert again.status_code == 200
    again.close()
    second.close()
    assert StreamLease.objects.count() == 0


def test_streams_open_in_other_web_processes_count_and_leases_of_dead_ones_expire(
    client: APIClient, tenant: Tenant, settings: Any
) -> None:
    """Leases are rows: live ones held by another process count against the cap; one whose
    process died (no renewal) stops counting when it expires."""
    settings.MINOOTS_STREAMS_PER_TENANT = 2
    settings.MINOOTS_STREAM_MAX_SECONDS = 0.2
    now = timezone.now()
    StreamLease.objects.create(tenant=tenant, expires_at=now + timedelta(seconds=30))
    dead = StreamLease.objects.create(tenant=tenant, expires_at=now + timedelta(seconds=30))
    assert_error(client.get("/api/timers/stream"), 429)

    StreamLease.objects.filter(pk=dead.pk).update(expires_at=now - timedelta(seconds=1))
    response = client.get("/api/timers/stream")
    assert response.status_code == 200
    assert not StreamLease.objects.filter(pk=dead.pk).exists()  # cleared by the count
    response.close()


def test_an_open_stream_renews_its_lease_and_ends_when_the_lease_is_gone(
    tenant: Tenant, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from timers import streams
    from timers.api.stream import event_stream

    monkeypatch.setattr(streams, "RENEW_SECONDS", 0.0)
    lease = streams.stream_lease_acquire(tenant=tenant, cap=1)
    assert lease is not None
    chunks = event_stream(tenant, 0, 5.0, lease)
    next(chunks)  # connected
    started = time.monotonic()
    StreamLease.objects.filter(pk=lease).delete()  # as an expired lease is, by another count
    assert list(chunks) == []  # ends at once rather than running out its 5 s
    assert time.monotonic() - started < 2.0
