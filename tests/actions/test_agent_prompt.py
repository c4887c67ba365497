"""``agent_prompt`` actions deliver to the timer's bound agent (issue 13 item 4): a signed
webhook to ``agentBinding.target`` with the rendered prompt, acknowledged by a 2xx within
``acknowledgementTimeoutMs``, retried by the policy; other adapters refused at create."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient
from standardwebhooks import Webhook

from actions.models import ActionRun, AttemptOutcome, RunStatus
from actions.runners.agent_prompt import render
from tests.actions.support import Receiver, Reply, drive
from tests.assertions import assert_error
from tests.factories import make_timer
from timers import services
from timers.models import Tenant, Timer, TimerStatus

pytestmark = pytest.mark.django_db


def prompt_action(**parameters: Any) -> dict[str, Any]:
    return {"id": "ask", "kind": "agent_prompt", "parameters": parameters}


def fired(tenant: Tenant, binding: dict[str, Any], *actions: dict[str, Any], max_attempts: int = 1) -> Timer:
    timer = make_timer(
        tenant=tenant,
        name="standup",
        actions=actions,
        retry_policy={"maxAttempts": max_attempts, "backoffInitialMs": 10},
        agent_binding=binding,
        metadata={"ticket": "OPS-7"},
    )
    assert timer.pk in [c.id for c in services.timers_fire(limit=10)]
    timer.refresh_from_db()
    return timer


def test_the_prompt_is_posted_to_the_bound_agent_signed_and_rendered_with_the_timer(
    tenant: Tenant, receiver: Receiver, allow_private: None
) -> None:
    binding = {
        "adapter": "webhook",
        "target": f"{receiver.url}/agent",
        "payloadTemplate": {"text": "Time for {{timer.name}} ({{timer.metadata.ticket}})", "id": "{{timer.id}}"},
        "acknowledgementTimeoutMs": 5000,
    }
    timer = drive(fired(tenant, binding, prompt_action()))

    assert timer.status == TimerStatus.SETTLED
    [request] = receiver.at("/agent")
    body = Webhook(tenant.webhook_secret).verify(request.body, request.headers)  # signed like any webhook
    assert body["event"] == "timer.agent_prompt"
    assert body["prompt"] == {"text": "Time for standup (OPS-7)", "id": str(timer.pk)}
    assert body["agent"] == {"adapter": "webhook", "target": f"{receiver.url}/agent"}
    assert body["timer"]["id"] == str(timer.pk) and "actionBundle" not in body["timer"]
    run = ActionRun.objects.get(timer=timer)
    assert request.headers["webhook-id"] == str(run.pk)


def test_the_actions_own_payload_wins_over_the_template_and_a_refusal_is_retried(
    tenant: Tenant, receiver: Receiver, allow_private: None
) -> None:
    receiver.script("/agent", Reply(status=503), Reply(status=202))
    binding = {"adapter": "webhook", "target": f"{receiver.url}/agent", "payloadTemplate": "unused"}
    timer = drive(fired(tenant, binding, prompt_action(payload="deploy {{timer.name}} now"), max_attempts=3))

    assert timer.status == TimerStatus.SETTLED
    assert [r.json()["prompt"] for r in receiver.at("/agent")] == ["deploy standup now"] * 2
    outcomes = list(
        ActionRun.objects.get(timer=timer).attempt_records.order_by("number").values_list("outcome", flat=True)
    )
    assert outcomes == [AttemptOutcome.TRANSIENT, AttemptOutcome.SUCCEEDED]


def test_a_binding_that_cannot_receive_fails_the_attempt_for_good(tenant: Tenant) -> None:
    timer = drive(fired(tenant, {"adapter": "mcp", "target": "agent-7"}, prompt_action()))
    run = ActionRun.objects.get(timer=timer)
    assert run.status == RunStatus.FAILED
    assert "agentBinding.adapter: 'mcp' cannot deliver an agent_prompt" in run.last_error


@pytest.mark.parametrize(
    ("binding", "contains"),
    [
        (None, "agentBinding: is required by an agent_prompt action"),
        ({"adapter": "mcp", "target": "agent-7"}, "adapter: 'mcp' cannot deliver an agent_prompt yet"),
        ({"adapter": "webhook", "target": "ftp://agent.example.com/"}, "target: must be an http or https URL"),
        (
            {"adapter": "webhook", "target": "https://93.184.215.14/", "acknowledgementTimeoutMs": 0},
            "acknowledgementTimeoutMs",
        ),
    ],
)
def test_an_agent_prompt_whose_binding_cannot_receive_is_a_400_at_create(
    client: APIClient, binding: dict[str, Any] | None, contains: str
) -> None:
    body: dict[str, Any] = {"name": "t", "duration": "5m", "actionBundle": {"actions": [prompt_action()]}}
    if binding is not None:
        body["agentBinding"] = binding
    assert_error(client.post("/api/timers", body, format="json"), 400, field="agentBinding", contains=contains)
    assert not Timer.objects.exists()


def test_the_original_clients_binding_without_an_agent_prompt_action_is_still_accepted(client: APIClient) -> None:
    body = {
        "name": "github-timer",
        "duration": "15m",
        "agentBinding": {
            "adapter": "mcp",
            "target": "agent-7",
            "payloadTemplate": {},
            "acknowledgementTimeoutMs": 60000,
        },
    }
    assert client.post("/api/timers", body, format="json").status_code == 201


def test_placeholders_take_the_values_type_when_alone_and_unknown_ones_stay() -> None:
    timer = {"name": "n", "latenessMs": 12, "metadata": {"tags": ["a"]}}
    assert render({"l": "{{timer.latenessMs}}", "t": "{{ timer.metadata.tags }}"}, timer) == {"l": 12, "t": ["a"]}
    assert (
        render("{{timer.nope}} and {{timer.name}} at {{timer.latenessMs}} ms", timer) == "{{timer.nope}} and n at 12 ms"
    )
