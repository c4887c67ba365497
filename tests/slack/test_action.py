"""The ``slack`` action kind against the fake Slack: what it posts, its retries and its
permanent errors, its deadline, and where a responseUrl may point."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from actions.errors import ParameterError
from actions.models import ActionRun, RunStatus
from actions.runners import get_runner
from integrations.slack.models import SlackWorkspace
from tests.actions.conftest import FireTimer
from tests.actions.support import drive, execute_next
from tests.factories import api_client, make_api_key, make_tenant
from tests.slack.fake_slack import Answer, FakeSlack
from timers.models import Tenant, TimerStatus

pytestmark = pytest.mark.django_db


def slack_action(**parameters: Any) -> dict[str, Any]:
    return {"id": "ping", "kind": "slack", "parameters": {"channel": "C0CHAN", "text": "⏰ tea", **parameters}}


def attempts(run: ActionRun) -> list[tuple[str, int | None, str]]:
    return [(a.outcome, a.http_status, a.error) for a in run.attempt_records.order_by("number")]


def test_posts_to_the_channel_with_the_bot_token_and_snooze_buttons(
    fake_slack: FakeSlack, slack_settings: Any, fire_timer: FireTimer
) -> None:
    timer = drive(fire_timer(slack_action(snooze=True)))

    [call] = fake_slack.at("chat.postMessage")
    assert call.headers["Authorization"] == f"Bearer {fake_slack.token}"
    assert call.body["channel"] == "C0CHAN" and call.body["text"] == "⏰ tea"
    section, buttons = call.body["blocks"]
    assert section["text"]["text"] == "⏰ tea"
    assert [(b["action_id"], b["text"]["text"], b["value"]) for b in buttons["elements"]] == [
        ("minoots_snooze_5m", "Snooze 5 min", str(timer.pk)),
        ("minoots_snooze_1h", "Snooze 1 h", str(timer.pk)),
        ("minoots_done", "Done", str(timer.pk)),
    ]
    assert timer.status == TimerStatus.SETTLED
    run = ActionRun.objects.get(timer=timer)
    assert run.status == RunStatus.SUCCEEDED
    assert fake_slack.token not in run.attempt_records.get().output_excerpt


def test_blocks_are_sent_as_given(fake_slack: FakeSlack, slack_settings: Any, fire_timer: FireTimer) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
    drive(fire_timer(slack_action(blocks=blocks)))
    assert fake_slack.at("chat.postMessage")[0].body["blocks"] == blocks


def test_a_429_is_retried_after_slacks_retry_after(
    fake_slack: FakeSlack, slack_settings: Any, fire_timer: FireTimer
) -> None:
    fake_slack.script("chat.postMessage", Answer(status=429, retry_after=7))
    timer = fire_timer(slack_action())

    before = timezone.now()
    run = execute_next(timer)

    assert run is not None and run.status == RunStatus.PENDING
    assert run.next_attempt_at is not None and run.next_attempt_at >= before + timedelta(seconds=6.9)
    assert attempts(run)[0][:2] == ("transient_failure", 429)
    timer = drive(timer)
    assert timer.status == TimerStatus.SETTLED
    assert len(fake_slack.at("chat.postMessage")) == 2


@pytest.mark.parametrize("error", ["channel_not_found", "not_in_channel", "is_archived"])
def test_slack_errors_that_a_retry_cannot_fix_fail_at_once(
    fake_slack: FakeSlack, slack_settings: Any, fire_timer: FireTimer, error: str
) -> None:
    fake_slack.script("chat.postMessage", Answer(error=error))

    timer = drive(fire_timer(slack_action()))

    run = ActionRun.objects.get(timer=timer)
    assert run.status == RunStatus.FAILED
    assert attempts(run) == [("permanent_failure", 200, f"chat.postMessage: {error}")]
    assert timer.status == TimerStatus.FAILED


def test_an_invalid_token_is_permanent(fake_slack: FakeSlack, slack_settings: Any, fire_timer: FireTimer) -> None:
    slack_settings.SLACK_BOT_TOKEN = "xoxb-revoked"

    timer = drive(fire_timer(slack_action()))

    run = ActionRun.objects.get(timer=timer)
    assert attempts(run) == [("permanent_failure", 200, "chat.postMessage: invalid_auth")]


def test_slacks_own_transient_errors_are_retried(
    fake_slack: FakeSlack, slack_settings: Any, fire_timer: FireTimer
) -> None:
    fake_slack.script("chat.postMessage", Answer(error="internal_error"), Answer(error="service_unavailable"))

    timer = drive(fire_timer(slack_action()))

    run = ActionRun.objects.get(timer=timer)
    assert [a[0] for a in attempts(run)] == ["transient_failure", "transient_failure", "succeeded"]
    assert timer.status == TimerStatus.SETTLED


def test_slack_down_is_a_transient_failure(slack_settings: Any, fake_slack: FakeSlack, fire_timer: FireTimer) -> None:
    fake_slack.close()
    timer = fire_timer(slack_action())
    run = execute_next(timer)
    assert run is not None and run.status == RunStatus.PENDING
    assert "no answer from Slack" in attempts(run)[0][2]


def test_timeout_ms_is_a_hard_deadline(fake_slack: FakeSlack, slack_settings: Any, fire_timer: FireTimer) -> None:
    fake_slack.script("chat.postMessage", Answer(hang=3))
    timer = fire_timer(slack_action(timeoutMs=300))

    started = time.monotonic()
    run = execute_next(timer)

    assert time.monotonic() - started < 2.5
    assert run is not None and run.status == RunStatus.PENDING
    assert attempts(run)[0][0] == "transient_failure" and "timed out after 300 ms" in attempts(run)[0][2]


def test_a_response_url_receives_the_message_in_channel(
    fake_slack: FakeSlack, slack_settings: Any, fire_timer: FireTimer
) -> None:
    url = fake_slack.response_url()
    timer = drive(fire_timer({"id": "r", "kind": "slack", "parameters": {"responseUrl": url, "text": "done"}}))

    [call] = fake_slack.at(url.removeprefix(fake_slack.url))
    assert call.body == {"text": "done", "response_type": "in_channel"}
    assert timer.status == TimerStatus.SETTLED


def test_an_expired_response_url_is_permanent(
    fake_slack: FakeSlack, slack_settings: Any, fire_timer: FireTimer
) -> None:
    url = fake_slack.response_url()
    fake_slack.script(url.removeprefix(fake_slack.url), Answer(error="expired_url"))
    timer = drive(fire_timer({"id": "r", "kind": "slack", "parameters": {"responseUrl": url, "text": "x"}}))
    assert attempts(ActionRun.objects.get(timer=timer))[0][:2] == ("permanent_failure", 404)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "https://hooks.slack.com.evil.example/commands/x",
        "http://hooks.slack.com/commands/x",
        "https://example.com/hooks/commands/x",
        "file:///etc/passwd",
    ],
)
def test_a_response_url_elsewhere_than_slack_is_refused(slack_settings: Any, url: str) -> None:
    runner = get_runner("slack")
    with pytest.raises(ParameterError, match="responseUrl: must be a Slack response_url"):
        runner.validate({"responseUrl": url, "text": "x"}, tenant_id="acme")


def test_slacks_hooks_host_is_a_valid_response_url(slack_settings: Any) -> None:
    params = get_runner("slack").validate(
        {"responseUrl": "https://hooks.slack.com/commands/T1/2/abc", "text": "x"}, tenant_id="acme"
    )
    assert params["responseUrl"] == "https://hooks.slack.com/commands/T1/2/abc"


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"text": "x"}, "exactly one of 'channel' or 'responseUrl'"),
        ({"channel": "C1"}, "text: is required"),
        ({"channel": "C1", "text": "x", "timeoutMs": 0}, "timeoutMs"),
        ({"channel": "C1", "text": "x", "blocks": "nope"}, "blocks"),
        ({"channel": "C1", "text": "x", "extra": 1}, "extra: unknown parameter"),
    ],
)
def test_invalid_parameters_are_refused(slack_settings: Any, parameters: dict[str, Any], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        get_runner("slack").validate(parameters, tenant_id="acme")


def test_api_users_get_the_slack_kind_for_a_connected_tenant_only(slack_settings: Any, tenant: Tenant) -> None:
    body = {"name": "n", "duration": "5m", "actionBundle": {"actions": [slack_action()]}}
    assert api_client(api_key=make_api_key(tenant=tenant)).post("/api/timers", body, format="json").status_code == 201

    globex = make_tenant(id="globex")
    response = api_client(api_key=make_api_key(tenant=globex)).post("/api/timers", body, format="json")
    assert response.status_code == 400
    assert "has no Slack workspace connected" in response.json()["message"]


def test_a_tenant_with_several_workspaces_names_one(slack_settings: Any, fake_slack: FakeSlack, tenant: Tenant) -> None:
    SlackWorkspace.objects.create(team_id="T1", tenant=tenant, bot_token=fake_slack.token)
    SlackWorkspace.objects.create(team_id="T2", tenant=tenant, bot_token="xoxb-other")
    runner = get_runner("slack")
    with pytest.raises(ParameterError, match="no Slack workspace"):
        runner.validate(slack_action()["parameters"], tenant_id="acme")
    assert runner.validate({**slack_action()["parameters"], "teamId": "T1"}, tenant_id="acme")["teamId"] == "T1"
