"""End to end, the issue's "done when": real web, firing worker, action worker and beat, Slack
played by the fake on loopback. ``/ato 3s tea`` is answered at once, the channel post arrives
when the timer fires, and the snooze button's follow-up fires and posts too.

Waits are bounded ("eventually, within N seconds"); the one timing assertion is Slack's own
3-second limit on the answer, which is the contract.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from tests.factories import make_api_key
from tests.processes import Processes, wait_for
from tests.slack.fake_slack import FakeSlack
from tests.slack.support import CHANNEL, SECRET, TEAM, USER, button_body, command_body, signed_headers
from timers.models import Tenant, Timer, TimerStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


@pytest.fixture
def slack_stack(processes: Processes, tenant: Tenant) -> Iterator[tuple[str, FakeSlack]]:
    fake = FakeSlack().start()
    processes.env.update(
        {
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_BOT_TOKEN": fake.token,
            "SLACK_DEFAULT_TENANT": tenant.id,
            "SLACK_API_URL": fake.api_url,
        }
    )
    web, base = processes.web(wait=False)
    processes.wait_ready(
        web,
        processes.worker("firing", queues="timers", concurrency=2, wait=False),
        processes.worker("actions", queues="actions", concurrency=4, wait=False),
        processes.beat(wait=False),
    )
    processes.wait_answering(web, base)  # Slack's 3 s start with the application loaded
    try:
        yield base, fake
    finally:
        fake.close()


def signed_post(url: str, body: str) -> requests.Response:
    return requests.post(
        url,
        data=body.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", **signed_headers(body)},
        timeout=3,  # Slack gives up after 3 s
    )


def test_ato_3s_tea_posts_in_the_channel_and_its_snooze_fires_too(
    slack_stack: tuple[str, FakeSlack], tenant: Tenant
) -> None:
    base, fake = slack_stack

    started = time.monotonic()
    answer = signed_post(f"{base}/integrations/slack/commands", command_body("3s tea"))
    assert time.monotonic() - started < 3
    assert answer.status_code == 200, answer.text
    assert answer.json()["response_type"] == "ephemeral"
    assert "fires in 3 seconds" in answer.json()["text"]

    [post] = wait_for(lambda: fake.at("chat.postMessage"), timeout=30, what="the channel post")
    assert post.body["channel"] == CHANNEL
    assert post.body["text"] == f"⏰ tea — set by <@{USER}> 3 seconds ago"
    buttons = post.body["blocks"][-1]["elements"]
    timer_id = buttons[0]["value"]
    first = Timer.objects.get(pk=timer_id)
    assert first.requested_by == f"slack:{TEAM}:{USER}"
    wait_for(lambda: Timer.objects.get(pk=timer_id).status == TimerStatus.SETTLED, timeout=15, what="settled")

    started = time.monotonic()
    pressed = signed_post(
        f"{base}/integrations/slack/interactive",
        button_body(action_id=buttons[0]["action_id"], timer_id=timer_id, text=post.body["text"]),
    )
    assert time.monotonic() - started < 3
    assert pressed.status_code == 200, pressed.text
    [update] = wait_for(lambda: fake.at("chat.update"), timeout=30, what="the message update (actions queue)")
    assert "Snooze 5 min" in update.body["text"]
    follow_up = Timer.objects.get(metadata__snoozedFrom=timer_id)
    assert follow_up.status in (TimerStatus.SCHEDULED, TimerStatus.ARMED)
    assert follow_up.duration_ms == 300_000

    # Five minutes is long for a test: bring the follow-up forward through the API, as a user
    # could, and watch it fire with its own channel post.
    key = make_api_key(tenant=tenant)
    moved = requests.patch(
        f"{base}/api/timers/{follow_up.pk}", json={"duration": "2s"}, headers={"X-API-Key": key}, timeout=10
    )
    assert moved.status_code == 200, moved.text
    posts = wait_for(
        lambda: len(fake.at("chat.postMessage")) >= 2 and fake.at("chat.postMessage"),
        timeout=30,
        what="the follow-up's channel post",
    )
    assert posts[1].body["text"] == f"⏰ tea — snoozed by <@{USER}> 5 minutes ago"
    assert posts[1].body["blocks"][-1]["elements"][0]["value"] == str(follow_up.pk)
    wait_for(lambda: Timer.objects.get(pk=follow_up.pk).status == TimerStatus.SETTLED, timeout=15, what="settled")
