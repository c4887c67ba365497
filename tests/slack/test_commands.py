"""``/ato`` through the endpoint: every grammar form and flag, list, cancel, status, help."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from integrations.slack.models import SlackWorkspace
from tests.factories import make_tenant, make_timer
from tests.slack.conftest import SlackClient
from tests.slack.support import CHANNEL, TEAM, USER
from timers.models import Tenant, Timer, TimerStatus

pytestmark = pytest.mark.django_db


def only_timer() -> Timer:
    [timer] = Timer.objects.all()
    return timer


def notify_parameters(timer: Timer) -> dict[str, Any]:
    [action] = [a for a in (timer.action_bundle or {})["actions"] if a["kind"] == "slack"]
    return action["parameters"]


def test_a_natural_command_sets_a_timer_that_will_post_in_the_channel(slack: SlackClient) -> None:
    text = slack.answer("10m tea is ready")

    timer = only_timer()
    assert f"`{str(timer.pk)[:8]}`" in text and "fires in 10 minutes" in text
    assert timer.name == "tea is ready"
    assert timer.duration_ms == 600_000
    assert timer.tenant_id == "acme"
    assert timer.requested_by == f"slack:{TEAM}:{USER}"
    assert timer.metadata["slack_note"] == "tea is ready"
    assert timer.metadata["slack"] == {"teamId": TEAM, "channelId": CHANNEL, "userId": USER}
    assert timer.labels == {"slack.channel": CHANNEL, "slack.team": TEAM}
    assert notify_parameters(timer) == {
        "channel": CHANNEL,
        "teamId": TEAM,
        "text": f"⏰ tea is ready — set by <@{USER}> 10 minutes ago",
        "snooze": True,
    }


@pytest.mark.parametrize(
    ("text", "duration_ms", "note"),
    [
        ("1h30m check the deploy", 5_400_000, "check the deploy"),
        ("in 2 hours stretch", 7_200_000, "stretch"),
        ("1h 30m check", 5_400_000, "check"),
        ("45s", 45_000, ""),
    ],
)
def test_natural_durations(slack: SlackClient, text: str, duration_ms: int, note: str) -> None:
    slack.answer(text)

    timer = only_timer()
    assert timer.duration_ms == duration_ms
    assert timer.metadata.get("slack_note", "") == note
    assert timer.name == (note or "slack timer")


def test_at_a_time_of_day_is_the_next_one(slack: SlackClient) -> None:
    now = timezone.now()
    slack.answer("at 14:00Z standup")

    timer = only_timer()
    expected = now.astimezone(UTC).replace(hour=14, minute=0, second=0, microsecond=0)
    if expected <= now:
        expected += timedelta(days=1)
    assert timer.fire_at == expected
    assert timer.name == "standup"


def test_at_a_date_and_time_with_an_offset(slack: SlackClient) -> None:
    day = (timezone.now() + timedelta(days=30)).date()
    slack.answer(f"at {day}T09:00+01:00 presents")

    timer = only_timer()
    assert timer.fire_at == datetime(day.year, day.month, day.day, 8, 0, tzinfo=UTC)
    assert timer.metadata["slack_note"] == "presents"


def test_the_original_bots_example_with_flags(slack: SlackClient) -> None:
    slack.answer('--duration 15m --name "Deploy follow-up" Investigate deployment metrics')

    timer = only_timer()
    assert timer.duration_ms == 900_000
    assert timer.name == "Deploy follow-up"
    assert timer.metadata["slack_note"] == "Investigate deployment metrics"
    assert notify_parameters(timer)["text"] == f"⏰ Investigate deployment metrics — set by <@{USER}> 15 minutes ago"


def test_short_flags(slack: SlackClient) -> None:
    slack.answer("-d 90s -n kettle boil water")

    timer = only_timer()
    assert (timer.duration_ms, timer.name, timer.metadata["slack_note"]) == (90_000, "kettle", "boil water")


@pytest.mark.parametrize("spelling", ["--fire-at {}", "-f {}", "--fire-at={}", "--fireAt {}"])
def test_every_spelling_of_fire_at_sets_fire_at(slack: SlackClient, spelling: str) -> None:
    """The original's yargs aliases (fireAt: ['f', 'fire-at'] with strip-aliased) could drop the
    value and answer "Please provide either --duration or --fire-at"; here each spelling sets it,
    and the answer shows the stored time, not the text typed."""
    at = (timezone.now() + timedelta(hours=3)).replace(microsecond=0)
    text = slack.answer(spelling.format(at.strftime("%Y-%m-%dT%H:%M:%SZ")) + " review")

    timer = only_timer()
    assert timer.fire_at == at
    assert timer.metadata["slack_note"] == "review"
    assert f"<!date^{int(at.timestamp())}^" in text


def test_json_flags_region_and_an_action_bundle(slack: SlackClient) -> None:
    slack.answer(
        '10m deploy --metadata {"pr": 42} --labels \'{"env": "prod"}\' --region eu-west '
        '--agent-binding {"agentId": "a1"} '
        '--action-bundle {"actions": [{"id": "hook", "kind": "webhook", "parameters": {"url": "https://example.com/h"}}]}'
    )

    timer = only_timer()
    assert timer.metadata["pr"] == 42 and timer.metadata["slack_note"] == "deploy"
    assert timer.labels == {"env": "prod", "minoots.io/region": "eu-west", "slack.channel": CHANNEL, "slack.team": TEAM}
    assert timer.agent_binding == {"agentId": "a1"}
    assert [a["id"] for a in (timer.action_bundle or {})["actions"]] == ["hook", "slack"]


def test_requested_by_may_only_name_the_caller(slack: SlackClient) -> None:
    assert "set" in slack.answer(f"5m x --requested-by slack:{TEAM}:{USER}")
    assert "that is you" in slack.answer("5m x --requested-by mallory")
    assert Timer.objects.count() == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tea", "start with when"),
        ("10 tea", "give a unit"),
        ("--duration 5m --fire-at 2030-01-01T00:00:00Z x", "not both"),
        ("5m x --metadata [1]", "must be a JSON object"),
        ("5m x --metadata {bad", "not valid JSON"),
        ('5m x --labels {"a": 1}', "--labels: label 'a' must have a string value"),
        ("5m x --bogus 1", "unknown flag `--bogus`"),
        ("5m x --name", "`--name` needs a value"),
        ("5m x -n a -n b", "given twice"),
        ("at 14:00 standup", "add a UTC offset"),
        ("--fire-at 2020-01-01T00:00:00Z old", "--fire-at: must be in the future"),
        ("400d later", "at most 365 days"),
        ('5m x --name "unclosed', "is not closed"),
        ("-d banana x", "--duration: 'banana' is not a duration"),
    ],
)
def test_unparseable_commands_get_a_clear_error_and_set_nothing(slack: SlackClient, text: str, message: str) -> None:
    answer = slack.answer(text)

    assert answer.startswith("⚠️")
    assert message in answer
    assert not Timer.objects.exists()


def test_help_and_an_empty_command_show_the_usage(slack: SlackClient) -> None:
    assert "/ato list" in slack.answer("help")
    assert "/ato list" in slack.answer("")


def slack_timer(
    tenant: Tenant, *, id: str | None = None, user: str = USER, channel: str = CHANNEL, **fields: Any
) -> Timer:
    return make_timer(
        tenant=tenant,
        id=uuid.UUID(id) if id else uuid.uuid4(),
        requested_by=f"slack:{TEAM}:{user}",
        labels={"slack.channel": channel, "slack.team": TEAM},
        **{"status": TimerStatus.SCHEDULED, "fire_at": timezone.now() + timedelta(hours=1), **fields},
    )


def test_list_shows_the_callers_pending_timers_in_this_channel_newest_first(slack: SlackClient, tenant: Tenant) -> None:
    now = timezone.now()
    older = slack_timer(tenant, name="older", created_at=now - timedelta(minutes=5))
    newer = slack_timer(tenant, name="newer", created_at=now - timedelta(minutes=1))
    slack_timer(tenant, name="elsewhere", channel="C0OTHER")
    slack_timer(tenant, name="someone else's", user="U0OTHER")
    slack_timer(tenant, name="done", status=TimerStatus.SETTLED)

    text = slack.answer("list")

    assert re.findall(r"\*(\w+)\*", text) == ["newer", "older"]
    assert f"`{str(newer.pk)[:8]}`" in text and f"`{str(older.pk)[:8]}`" in text
    assert "in 59m" in text or "in 1h" in text


def test_list_without_timers(slack: SlackClient) -> None:
    assert "no pending timers" in slack.answer("list")


def test_cancel_by_a_unique_prefix(slack: SlackClient, tenant: Tenant) -> None:
    timer = slack_timer(tenant, id="abcd1234-0000-4000-8000-000000000001", name="tea")
    slack_timer(tenant, id="abce1234-0000-4000-8000-000000000002", name="coffee")

    text = slack.answer("cancel abcd")

    timer.refresh_from_db()
    assert timer.status == TimerStatus.CANCELLED
    assert timer.cancelled_by == f"slack:{TEAM}:{USER}"
    assert "`abcd1234` *tea* is cancelled" in text


def test_cancel_by_the_full_id(slack: SlackClient, tenant: Tenant) -> None:
    timer = slack_timer(tenant)
    slack.answer(f"cancel {timer.pk}")
    timer.refresh_from_db()
    assert timer.status == TimerStatus.CANCELLED


def test_an_ambiguous_prefix_is_a_clear_error_and_cancels_nothing(slack: SlackClient, tenant: Tenant) -> None:
    slack_timer(tenant, id="abcd1234-0000-4000-8000-000000000001", name="tea")
    slack_timer(tenant, id="abcd9999-0000-4000-8000-000000000002", name="coffee")

    text = slack.answer("cancel abcd")

    assert "matches several timers" in text and "`abcd1234` tea" in text and "`abcd9999` coffee" in text
    assert not Timer.objects.filter(status=TimerStatus.CANCELLED).exists()


@pytest.mark.parametrize(
    ("reference", "message"), [("ab", "at least 4"), ("zzzz", "not a timer id"), ("ffff", "no timer")]
)
def test_cancel_with_a_bad_reference(slack: SlackClient, tenant: Tenant, reference: str, message: str) -> None:
    slack_timer(tenant, id="abcd1234-0000-4000-8000-000000000001")
    assert message in slack.answer(f"cancel {reference}")


def test_cancel_of_a_settled_timer_says_so(slack: SlackClient, tenant: Tenant) -> None:
    slack_timer(tenant, id="abcd1234-0000-4000-8000-000000000001", status=TimerStatus.SETTLED)
    assert "already settled" in slack.answer("cancel abcd1234")


def test_timers_of_another_tenant_are_invisible(slack: SlackClient, other_tenant: Tenant) -> None:
    slack_timer(other_tenant, id="abcd1234-0000-4000-8000-000000000001")
    assert "no timer" in slack.answer("cancel abcd1234")
    assert "no pending timers" in slack.answer("list")


def test_status_shows_the_timer_and_its_actions(slack: SlackClient) -> None:
    slack.answer("10m tea")
    timer = only_timer()

    text = slack.answer(f"status {str(timer.pk)[:8]}")

    assert f"Timer `{timer.pk}` *tea*: armed" in text or f"Timer `{timer.pk}` *tea*: scheduled" in text
    assert "fires in 9m" in text or "fires in 10m" in text


def test_an_unknown_workspace_is_told_it_is_not_connected(slack: SlackClient, settings: Any) -> None:
    settings.SLACK_DEFAULT_TENANT = ""

    text = slack.answer("10m tea")

    assert "not connected" in text
    assert not Timer.objects.exists()


def test_a_connected_workspace_maps_to_its_own_tenant(slack: SlackClient, settings: Any) -> None:
    settings.SLACK_DEFAULT_TENANT = ""
    globex = make_tenant(id="globex")
    SlackWorkspace.objects.create(team_id="T0GLOBEX", tenant=globex, bot_token="xoxb-globex")

    slack.answer("10m tea", team="T0GLOBEX")

    timer = only_timer()
    assert timer.tenant_id == "globex"
    assert timer.requested_by == f"slack:T0GLOBEX:{USER}"


def test_the_default_tenant_is_created_on_first_use(slack: SlackClient, settings: Any) -> None:
    settings.SLACK_DEFAULT_TENANT = "kitchen"
    slack.answer("10m tea")
    assert only_timer().tenant_id == "kitchen"
