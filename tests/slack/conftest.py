"""Fixtures for the Slack tests: a fake Slack on loopback, the settings of a single-workspace
install pointing at it, and a client sending requests signed as Slack signs them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

from tests.actions.conftest import fire_timer  # noqa: F401  (fixture)
from tests.slack.fake_slack import FakeSlack
from tests.slack.support import SECRET, button_body, command_body, signed_headers


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def slack_settings(settings: Any, fake_slack: FakeSlack) -> Any:
    settings.SLACK_SIGNING_SECRET = SECRET
    settings.SLACK_DEFAULT_TENANT = "acme"
    settings.SLACK_BOT_TOKEN = fake_slack.token
    settings.SLACK_API_URL = fake_slack.api_url
    return settings


@dataclass
class SlackClient:
    client: Client

    def command(self, text: str, **fields: Any) -> Any:
        body = command_body(text, **fields)
        return self.post("/integrations/slack/commands", body)

    def answer(self, text: str, **fields: Any) -> str:
        """The ephemeral answer's text to ``/ato <text>``."""
        response = self.command(text, **fields)
        assert response.status_code == 200, response.content
        data = response.json()
        assert data["response_type"] == "ephemeral"
        return str(data["text"])

    def press(self, **fields: Any) -> Any:
        return self.post("/integrations/slack/interactive", button_body(**fields))

    def post(self, path: str, body: str, headers: dict[str, str] | None = None) -> Any:
        return self.client.post(
            path,
            data=body,
            content_type="application/x-www-form-urlencoded",
            headers=signed_headers(body) if headers is None else headers,
        )


@pytest.fixture
def slack(db: Any, tenant: Any, slack_settings: Any) -> SlackClient:
    return SlackClient(Client())
