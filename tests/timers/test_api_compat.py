"""Wire compatibility with the original control plane (issue 13 item 4): its clients' bodies,
headers and fields work unchanged."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from tests.assertions import assert_error
from tests.factories import api_client, make_api_key
from timers.models import Tenant, Timer

SLACK_BODY = {
    "tenantId": "acme",
    "requestedBy": "slack:command",
    "name": "deploy",
    "duration": "5m",
    "metadata": {"slack_note": "note here"},
    "labels": {"minoots.io/region": "us-east"},
    "ecosystem": {"parserator": {"datasetId": "contacts-v3"}},
}


def _create(client: APIClient, body: dict[str, Any], **headers: str) -> Any:
    return client.post("/api/timers", body, format="json", headers=headers)


def test_the_slack_bots_body_with_an_ecosystem_is_created_with_the_ecosystem_merged_and_projected(
    client: APIClient,
) -> None:
    response = _create(client, SLACK_BODY)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["ecosystem"] == {"parserator": {"datasetId": "contacts-v3"}}
    assert body["metadata"] == {"slack_note": "note here", "ecosystem": {"parserator": {"datasetId": "contacts-v3"}}}
    assert body["labels"] == {
        "minoots.io/region": "us-east",
        "ecosystem.sources": "1",
        "ecosystem.parserator/dataset": "contacts-v3",
    }
    assert body["requestedBy"] == "slack:command"


def test_every_projected_ecosystem_field_becomes_its_label_as_the_original_names_it(client: APIClient) -> None:
    ecosystem = {
        "parserator": {
            "workspaceId": " ws-1 ",
            "datasetId": "d",
            "recipeSlug": "r",
            "autopilotMode": "assisted",
            "confidenceThreshold": 0.5,
            "callbackUrl": "https://cb.example.com/x",
        },
        "reposiologist": {
            "repositoryUrl": "https://github.com/acme/app",
            "branch": "main",
            "sweepCadence": "weekly",
            "auditFocus": "safety",
            "clausePack": "p",
        },
        "nimbusGuardian": {
            "policyId": "p1",
            "environment": "staging",
            "gateLevel": "enforced",
            "enableSecretScan": True,
        },
        "clearSeas": {
            "engagementId": "e1",
            "serviceTier": "pilot",
            "partnerPod": "pod-a",
            "liaison": "l",
            "cadence": "weekly",
        },
        "sharedNarrative": "launch",
        "nextSyncIso": "2030-01-01T14:00:00.500Z",
    }
    response = _create(client, {"duration": "5m", "ecosystem": ecosystem, "labels": {"ecosystem.sources": "mine"}})

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["ecosystem"]["parserator"]["workspaceId"] == "ws-1"  # trimmed, as zod's trim()
    assert body["labels"] == {
        "ecosystem.sources": "mine",  # the client's own label wins
        "ecosystem.parserator/workspace": "ws-1",
        "ecosystem.parserator/dataset": "d",
        "ecosystem.parserator/recipe": "r",
        "ecosystem.parserator/autopilot": "assisted",
        "ecosystem.reposiologist/repository": "https://github.com/acme/app",
        "ecosystem.reposiologist/branch": "main",
        "ecosystem.reposiologist/cadence": "weekly",
        "ecosystem.reposiologist/focus": "safety",
        "ecosystem.nimbusGuardian/policy": "p1",
        "ecosystem.nimbusGuardian/environment": "staging",
        "ecosystem.nimbusGuardian/gate": "enforced",
        "ecosystem.clearSeas/engagement": "e1",
        "ecosystem.clearSeas/tier": "pilot",
        "ecosystem.clearSeas/pod": "pod-a",
        "ecosystem.nextSyncIso": "2030-01-01T14:00:00.500Z",
    }


def test_an_ecosystem_in_metadata_is_merged_section_by_section_with_the_bodys(client: APIClient) -> None:
    metadata = {"ecosystem": {"parserator": {"datasetId": "old", "recipeSlug": "r"}, "sharedNarrative": "n"}}
    body = {"duration": "5m", "metadata": metadata, "ecosystem": {"parserator": {"datasetId": "new"}}}

    response = _create(client, body)

    assert response.status_code == 201, response.content
    assert response.json()["ecosystem"] == {
        "parserator": {"datasetId": "new", "recipeSlug": "r"},
        "sharedNarrative": "n",
    }


def test_metadata_with_an_ecosystem_key_that_is_not_a_valid_block_is_kept_as_it_is(client: APIClient) -> None:
    response = _create(client, {"duration": "5m", "metadata": {"ecosystem": "ours"}})

    assert response.status_code == 201, response.content
    assert response.json()["metadata"] == {"ecosystem": "ours"}
    assert response.json()["ecosystem"] is None
    assert response.json()["labels"] == {}


def test_an_ecosystem_field_error_names_its_path(client: APIClient) -> None:
    response = _create(client, {"duration": "5m", "ecosystem": {"clearSeas": {"serviceTier": "gold"}}})

    body = assert_error(response, 400, contains="clearSeas.serviceTier")
    assert list(body["details"]) == ["ecosystem"]


def test_a_timer_without_a_name_is_named_timer_and_its_creation_time_in_epoch_ms(client: APIClient) -> None:
    before = int(timezone.now().timestamp() * 1000)
    response = _create(client, {"duration": "5m"})
    after = int(timezone.now().timestamp() * 1000)

    assert response.status_code == 201, response.content
    name = response.json()["name"]
    assert name.startswith("timer_") and before <= int(name.removeprefix("timer_")) <= after


def test_the_region_header_sets_the_region_label_unless_the_body_has_one(client: APIClient) -> None:
    from_header = _create(client, {"duration": "5m"}, **{"x-minoots-region": "eu-west"})
    from_body = _create(
        client, {"duration": "5m", "labels": {"minoots.io/region": "us-east"}}, **{"x-minoots-region": "eu-west"}
    )

    assert from_header.json()["labels"] == {"minoots.io/region": "eu-west"}
    assert from_body.json()["labels"] == {"minoots.io/region": "us-east"}


def test_a_region_header_too_long_for_a_label_is_a_400(client: APIClient) -> None:
    response = _create(client, {"duration": "5m"}, **{"x-minoots-region": "r" * 501})

    assert_error(response, 400, contains="x-minoots-region")
    assert not Timer.objects.exists()


def test_labels_over_the_limit_with_the_ecosystems_are_a_400(client: APIClient) -> None:
    labels = {f"k{i}": "v" for i in range(63)}
    body = {"duration": "5m", "labels": labels, "ecosystem": {"parserator": {"datasetId": "d"}}}

    assert_error(_create(client, body), 400, contains="at most 64 labels")


def test_jitter_is_the_lateness_under_the_originals_name(client: APIClient) -> None:
    created = _create(client, {"duration": "5m"}).json()
    assert created["jitterMs"] is None
    Timer.objects.filter(pk=created["id"]).update(status="settled", fired_at=timezone.now(), lateness_ms=37)

    body = client.get(f"/api/timers/{created['id']}").json()

    assert body["latenessMs"] == body["jitterMs"] == 37


def test_listing_another_tenants_timers_by_tenant_id_is_a_403(client: APIClient, other_tenant: Tenant) -> None:
    assert_error(client.get("/api/timers", {"tenantId": other_tenant.id}), 403, contains="tenantId")


def test_listing_by_the_callers_tenant_id_or_all_lists_the_callers_timers(
    client: APIClient, other_tenant: Tenant
) -> None:
    mine = _create(client, {"duration": "5m"}).json()["id"]
    theirs = api_client(api_key=make_api_key(tenant=other_tenant))
    _create(theirs, {"duration": "5m"})

    for tenant_id in ("acme", "__all__"):
        page = client.get("/api/timers", {"tenantId": tenant_id})
        assert page.status_code == 200, page.content
        assert [t["id"] for t in page.json()["timers"]] == [mine]


def _stream_frames(client: APIClient, **params: str) -> list[str]:
    settings_override = {"MINOOTS_STREAM_MAX_SECONDS": 0.3}
    with override_settings(**settings_override):
        response: Any = client.get("/api/timers/stream", {"after": "0", **params}, HTTP_ACCEPT="text/event-stream")
        assert response.status_code == 200
        return b"".join(response.streaming_content).decode().split("\n\n")


def test_the_stream_starts_with_stream_start_and_each_frame_carries_the_originals_envelope(
    client: APIClient,
) -> None:
    created = _create(client, {"name": "env", "duration": "5m"}).json()

    frames = _stream_frames(client)

    assert frames[0].startswith(": stream-start\n")
    [frame] = [f for f in frames if f.startswith("id: ")]
    lines = dict(line.split(": ", 1) for line in frame.split("\n"))
    data = json.loads(lines["data"])
    assert lines["event"] == data["kind"] == "created"
    assert data["eventType"] == data["event"]["type"] == "timer.created"
    assert data["occurredAtIso"] == data["occurredAt"]
    assert data["tenantId"] == "acme"
    assert data["event"]["timer"]["id"] == created["id"] and data["event"]["timer"]["name"] == "env"
    assert UUID(data["envelopeId"]) and data["dedupeKey"].startswith(f"{created['id']}:1:created:")
    assert data["traceId"] == UUID(created["id"]).hex


def test_the_stream_honours_topic_filters(client: APIClient) -> None:
    assert_error(client.get("/api/timers/stream", {"topic": "exploded"}), 400, contains="topic")
    created = _create(client, {"duration": "5m"}).json()
    client.post(f"/api/timers/{created['id']}/cancel", {}, format="json")

    kinds = [f.split("\n")[1] for f in _stream_frames(client, topic="timer.cancelled") if f.startswith("id: ")]

    assert kinds == ["event: cancelled"]
