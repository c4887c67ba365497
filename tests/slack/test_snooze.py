"""The buttons of a fired message: Snooze makes a follow-up timer linked to the first and
updates the message (a task on the actions queue); Done updates it only."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from actions.errors import ActionError
from integrations.slack import services
from integrations.slack.tasks import update_message
from tests.actions.support import drive
from tests.broker import queued_tasks
from tests.factories import make_tenant, make_timer
from tests.slack.conftest import SlackClient
from tests.slack.fake_slack import Answer, FakeSlack
from tests.slack.support import CHANNEL, TEAM, USER
from timers import services as timer_services
from timers.models import Timer, TimerStatus

pytestmark = pytest.mark.django_db

TS = "1700000000.000100"


def fired_timer(slack: SlackClient) -> Timer:
    """A timer set with ``/ato 3s tea``, fired (its post made), as the engine does."""
    slack.answer("3s tea")
    timer = Timer.objects.get()
    Timer.objects.filter(pk=timer.pk).update(fire_at=timer.created_at)
    timer_services.timers_fire(limit=10)
    return drive(timer)


def published_update(broker: redis.Redis) -> dict[str, Any]:
    [task] = queued_tasks(broker, "actions", task=services.UPDATE_MESSAGE)
    return task.kwargs


def test_snooze_creates_a_linked_follow_up_and_updates_the_message(
    slack: SlackClient, fake_slack: FakeSlack, broker: redis.Redis, django_capture_on_commit_callbacks: Any
) -> None:
    first = fired_timer(slack)
    assert first.status == TimerStatus.SETTLED

    with django_capture_on_commit_callbacks(execute=True):
        response = slack.press(action_id="minoots_snooze_5m", timer_id=str(first.pk), ts=TS, user="U0BOB")

    assert response.status_code == 200
    follow_up = Timer.objects.exclude(pk=first.pk).get()
    assert follow_up.metadata["snoozedFrom"] == str(first.pk)
    assert follow_up.metadata["slack_note"] == "tea"
    assert follow_up.duration_ms == 300_000
    assert follow_up.name == "tea"
    assert follow_up.requested_by == f"slack:{TEAM}:U0BOB"
    assert follow_up.status == TimerStatus.SCHEDULED
    [action] = (follow_up.action_bundle or {})["actions"]
    assert action["parameters"]["text"] == "⏰ tea — snoozed by <@U0BOB> 5 minutes ago"
    assert action["parameters"]["channel"] == CHANNEL

    update = published_update(broker)
    update_message.run(**update)
    [call] = fake_slack.at("chat.update")
    assert (call.body["channel"], call.body["ts"]) == (CHANNEL, TS)
    assert "Snooze 5 min by <@U0BOB>" in call.body["text"]
    assert all(block["type"] != "actions" for block in call.body["blocks"])  # the buttons are gone


def test_snooze_1h(slack: SlackClient, fake_slack: FakeSlack) -> None:
    first = fired_timer(slack)
    slack.press(action_id="minoots_snooze_1h", timer_id=str(first.pk))
    assert Timer.objects.exclude(pk=first.pk).get().duration_ms == 3_600_000


def test_a_second_click_gets_the_follow_up_already_made(slack: SlackClient, fake_slack: FakeSlack) -> None:
    first = fired_timer(slack)
    slack.press(action_id="minoots_snooze_5m", timer_id=str(first.pk))
    slack.press(action_id="minoots_snooze_5m", timer_id=str(first.pk))
    slack.press(action_id="minoots_snooze_1h", timer_id=str(first.pk))
    assert Timer.objects.exclude(pk=first.pk).count() == 1


def test_done_updates_the_message_and_makes_no_timer(
    slack: SlackClient, fake_slack: FakeSlack, broker: redis.Redis, django_capture_on_commit_callbacks: Any
) -> None:
    first = fired_timer(slack)

    with django_capture_on_commit_callbacks(execute=True):
        assert slack.press(action_id="minoots_done", timer_id=str(first.pk), ts=TS).status_code == 200

    assert Timer.objects.count() == 1
    update_message.run(**published_update(broker))
    assert f"✅ Done — <@{USER}>" in fake_slack.at("chat.update")[0].body["text"]


def test_a_button_for_another_tenants_timer_does_nothing(slack: SlackClient) -> None:
    other = make_timer(tenant=make_tenant(id="globex"), requested_by=f"slack:{TEAM}:{USER}")
    response = slack.press(action_id="minoots_snooze_5m", timer_id=str(other.pk))
    assert "no longer exists" in response.json()["text"]
    assert Timer.objects.count() == 1


def test_an_unknown_workspace_button_is_not_connected(slack: SlackClient, settings: Any) -> None:
    settings.SLACK_DEFAULT_TENANT = ""
    response = slack.press(action_id="minoots_snooze_5m", timer_id="00000000-0000-4000-8000-000000000000")
    assert "not connected" in response.json()["text"]


def test_other_interactions_are_acknowledged_and_ignored(slack: SlackClient) -> None:
    response = slack.press(action_id="someone_elses_button", timer_id="x")
    assert response.status_code == 200 and response.content == b""


def test_a_rate_limited_update_is_transient_with_retry_after(
    slack: SlackClient, fake_slack: FakeSlack, tenant: Any
) -> None:
    fake_slack.script("chat.update", Answer(status=429, retry_after=9))
    with pytest.raises(ActionError) as caught:
        services.message_update(tenant_id="acme", team_id=TEAM, channel=CHANNEL, ts=TS, text="x", blocks=[])
    assert not caught.value.permanent and caught.value.retry_after == 9


def test_without_a_token_the_update_goes_to_the_response_url(
    slack: SlackClient, fake_slack: FakeSlack, settings: Any
) -> None:
    settings.SLACK_BOT_TOKEN = ""
    url = fake_slack.response_url("button")
    how = services.message_update(
        tenant_id="acme", team_id=TEAM, channel=CHANNEL, ts=TS, text="x", blocks=[], response_url=url
    )
    assert how == "response_url"
    assert fake_slack.at(url.removeprefix(fake_slack.url))[0].body["replace_original"] is True
