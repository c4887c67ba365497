"""The Slack app manifest in the README names the endpoints this project serves."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from django.urls import resolve

from integrations.slack import views

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    text = README.read_text()
    section = text[text.index("## Slack") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block, "no YAML manifest in the README's Slack section"
    loaded: dict[str, Any] = yaml.safe_load(block.group(1))
    return loaded


def test_the_slash_command_is_ato_on_the_commands_endpoint(manifest: dict[str, Any]) -> None:
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == "/ato"
    assert resolve(urlsplit(command["url"]).path).func is views.commands


def test_interactivity_goes_to_the_interactive_endpoint(manifest: dict[str, Any]) -> None:
    interactivity = manifest["settings"]["interactivity"]
    assert interactivity["is_enabled"] is True
    assert resolve(urlsplit(interactivity["request_url"]).path).func is views.interactive


def test_the_bot_scopes_are_commands_and_chat_write(manifest: dict[str, Any]) -> None:
    assert sorted(manifest["oauth_config"]["scopes"]["bot"]) == ["chat:write", "commands"]


def test_the_original_bots_request_url_answers_slash_commands() -> None:
    assert resolve("/slack/events").func is views.commands
