"""Slack's v0 signatures on both endpoints: only requests signed with the signing secret, within
five minutes, are answered."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.slack.conftest import SlackClient
from tests.slack.support import command_body, signed_headers
from timers.models import Timer

pytestmark = pytest.mark.django_db

COMMANDS = "/integrations/slack/commands"
INTERACTIVE = "/integrations/slack/interactive"


def assert_refused(response: Any, status: int, message: str) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert message in body["message"]
    assert set(body) == {"message", "details"}


def test_a_signed_request_is_answered(slack: SlackClient) -> None:
    response = slack.post(COMMANDS, command_body("help"))
    assert response.status_code == 200


@pytest.mark.parametrize("path", [COMMANDS, INTERACTIVE, "/slack/events"])
def test_a_bad_signature_is_refused_with_401_json(slack: SlackClient, path: str) -> None:
    body = command_body("10m tea")
    headers = signed_headers(body, secret="not-the-signing-secret")

    assert_refused(slack.post(path, body, headers), 401, "Invalid Slack signature")
    assert not Timer.objects.exists()


def test_a_body_other_than_the_signed_one_is_refused(slack: SlackClient) -> None:
    headers = signed_headers(command_body("10m tea"))
    assert_refused(slack.post(COMMANDS, command_body("1d tea"), headers), 401, "Invalid Slack signature")


@pytest.mark.parametrize("missing", ["X-Slack-Signature", "X-Slack-Request-Timestamp"])
def test_a_missing_signature_is_refused(slack: SlackClient, missing: str) -> None:
    body = command_body("10m tea")
    headers = {k: v for k, v in signed_headers(body).items() if k != missing}
    assert_refused(slack.post(COMMANDS, body, headers), 401, "Missing Slack signature")


@pytest.mark.parametrize("age", [301, 3600, -301])
def test_a_timestamp_more_than_five_minutes_away_is_refused_even_when_signed(slack: SlackClient, age: int) -> None:
    body = command_body("10m tea")
    headers = signed_headers(body, timestamp=int(time.time()) - age)

    assert_refused(slack.post(COMMANDS, body, headers), 401, "more than 5 minutes")
    assert not Timer.objects.exists()


def test_a_timestamp_within_five_minutes_is_accepted(slack: SlackClient) -> None:
    body = command_body("help")
    assert slack.post(COMMANDS, body, signed_headers(body, timestamp=int(time.time()) - 200)).status_code == 200


def test_a_timestamp_that_is_not_a_number_is_refused(slack: SlackClient) -> None:
    body = command_body("help")
    headers = {**signed_headers(body), "X-Slack-Request-Timestamp": "soon"}
    assert_refused(slack.post(COMMANDS, body, headers), 401, "timestamp")


def test_without_a_signing_secret_the_integration_is_off(slack: SlackClient, settings: Any) -> None:
    settings.SLACK_SIGNING_SECRET = ""
    body = command_body("help")
    assert_refused(slack.post(COMMANDS, body), 503, "SLACK_SIGNING_SECRET")


def test_get_is_not_allowed(slack: SlackClient) -> None:
    assert slack.client.get(COMMANDS).status_code == 405


def test_the_original_bots_request_url_answers_too(slack: SlackClient) -> None:
    response = slack.post("/slack/events", command_body("help"))
    assert response.status_code == 200
    assert "/ato list" in response.json()["text"]
