"""POST /api/timers checks every action's parameters against its kind: 400 naming the action."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from actions.bundle import parse_bundle
from actions.errors import ActionError, ParameterError
from actions.runners import RUNNERS, ActionContext, get_runner
from tests.assertions import assert_error
from timers.models import Timer

pytestmark = pytest.mark.django_db


def post(client: APIClient, *actions: dict[str, Any], **bundle: Any) -> Any:
    body = {"name": "t", "duration": "5m", "actionBundle": {"actions": list(actions), **bundle}}
    return client.post("/api/timers", body, format="json")


def refused(response: Any) -> str:
    """The message of a 400 on ``actionBundle`` (the documented error shape); no timer was stored."""
    message: str = assert_error(response, 400, field="actionBundle")["message"]
    assert not Timer.objects.exists()
    return message


@pytest.mark.parametrize("kind", ["workflow_event", "shell", "agent"])
def test_unknown_kinds_are_refused_with_the_list_of_kinds(client: APIClient, kind: str) -> None:
    message = refused(post(client, {"id": "think", "kind": kind, "parameters": {"prompt": "hi"}}))

    assert f"unknown kind '{kind}'" in message
    assert "available kinds: agent_prompt, command, file, slack, webhook" in message
    assert "actions[0].kind" in message


def test_non_http_url_is_refused_naming_the_action_and_field(client: APIClient) -> None:
    message = refused(post(client, {"id": "notify", "kind": "webhook", "parameters": {"url": "gopher://x"}}))

    assert "actions[0].parameters.url" in message
    assert "(action 'notify')" in message
    assert "http or https" in message


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x",
        "http://localhost:8000/x",
    ],
)
def test_private_webhook_targets_are_refused_while_not_allowed(client: APIClient, url: str) -> None:
    message = refused(post(client, {"id": "ssrf", "kind": "webhook", "parameters": {"url": url}}))

    assert "(action 'ssrf')" in message
    assert "MINOOTS_WEBHOOK_ALLOW_PRIVATE" in message


def test_private_webhook_target_is_accepted_when_allowed(client: APIClient, settings: Any) -> None:
    settings.MINOOTS_WEBHOOK_ALLOW_PRIVATE = True
    response = post(client, {"id": "local", "kind": "webhook", "parameters": {"url": "http://127.0.0.1:9/x"}})
    assert response.status_code == 201, response.content


def test_command_not_on_the_allow_list_is_refused(client: APIClient, settings: Any) -> None:
    settings.MINOOTS_COMMAND_ALLOWLIST = ["/bin/echo"]
    message = refused(post(client, {"id": "wipe", "kind": "command", "parameters": {"argv": ["/bin/rm", "-rf", "/"]}}))

    assert "actions[0].parameters.argv" in message
    assert "'/bin/rm' is not in MINOOTS_COMMAND_ALLOWLIST" in message


def test_command_is_refused_while_commands_are_disabled(client: APIClient, settings: Any) -> None:
    settings.MINOOTS_COMMAND_ALLOWLIST = []
    message = refused(post(client, {"id": "hi", "kind": "command", "parameters": {"argv": ["/bin/echo"]}}))

    assert "command actions are disabled" in message


def test_file_action_is_refused_while_file_writes_are_disabled(client: APIClient, settings: Any) -> None:
    settings.MINOOTS_FILE_ROOT = ""
    message = refused(post(client, {"id": "note", "kind": "file", "parameters": {"path": "x", "content": "y"}}))

    assert "(action 'note')" in message
    assert "file actions are disabled" in message


def test_file_traversal_is_refused(client: APIClient, file_root: Path) -> None:
    message = refused(post(client, {"id": "note", "kind": "file", "parameters": {"path": "../x", "content": "y"}}))

    assert "actions[0].parameters.path" in message
    assert "'..'" in message


def test_parameters_of_an_escalation_are_checked_too(client: APIClient) -> None:
    action = {
        "id": "a",
        "kind": "webhook",
        "parameters": {"url": "https://93.184.215.14/hook"},
        "escalation": {
            "afterAttempts": 1,
            "escalatesTo": {"id": "b", "kind": "webhook", "parameters": {"url": "ftp://x"}},
        },
    }
    message = refused(post(client, action))

    assert "actions[0].escalation.escalatesTo.parameters.url" in message
    assert "(action 'b')" in message


def test_second_action_error_names_its_own_index_and_id(client: APIClient) -> None:
    ok = {"id": "ok", "kind": "webhook", "parameters": {"url": "https://93.184.215.14/hook"}}
    bad = {"id": "bad", "kind": "webhook", "parameters": {"url": "https://93.184.215.14/hook", "timeoutMs": -1}}
    message = refused(post(client, ok, bad))

    assert "actions[1].parameters.timeoutMs" in message
    assert "(action 'bad')" in message


def test_bundle_with_all_three_kinds_is_accepted(client: APIClient, settings: Any, file_root: Path) -> None:
    settings.MINOOTS_COMMAND_ALLOWLIST = ["/bin/echo"]
    response = post(
        client,
        {"id": "hook", "kind": "webhook", "parameters": {"url": "https://93.184.215.14/hook", "method": "PUT"}},
        {"id": "cmd", "kind": "command", "parameters": {"argv": ["echo", "; rm -rf /"], "timeoutMs": 1000}},
        {"id": "note", "kind": "file", "parameters": {"path": "out/note.txt", "content": {"a": 1}, "mode": "append"}},
        concurrency=3,
        retryPolicy={"maxAttempts": 5, "backoffInitialMs": 500, "backoffMultiplier": 2},
    )

    assert response.status_code == 201, response.content
    assert [a["id"] for a in response.json()["actionBundle"]["actions"]] == ["hook", "cmd", "note"]


@pytest.mark.parametrize(
    ("kind", "parameters", "field"),
    [
        ("webhook", {"url": "https://93.184.215.14/\ud800"}, "url"),
        ("webhook", {"url": "https://93.184.215.14/", "body": "\udfff"}, "body"),
        ("command", {"argv": ["/bin/echo", "\ud800"]}, "argv"),
        ("file", {"path": "x.txt", "content": "\ud800"}, "content"),
    ],
)
def test_lone_surrogates_in_parameters_are_refused_by_the_runner(
    settings: Any, file_root: Path, kind: str, parameters: dict[str, Any], field: str
) -> None:
    settings.MINOOTS_COMMAND_ALLOWLIST = ["/bin/echo"]
    with pytest.raises(ParameterError) as info:
        get_runner(kind).validate(parameters, tenant_id="acme")
    assert info.value.field == field


@pytest.mark.parametrize("url", ["http://a..b/x", f"http://{'a' * 64}.example.com/x"])
def test_a_webhook_url_with_an_invalid_host_name_is_a_400_naming_the_url(client: Any, url: str) -> None:
    body = {
        "name": "t",
        "duration": "5m",
        "actionBundle": {"actions": [{"id": "hook", "kind": "webhook", "parameters": {"url": url}}]},
    }
    response = client.post("/api/timers", body, format="json")
    assert_error(response, 400, field="actionBundle", contains="actions[0].parameters.url")


def test_the_registry_lists_each_kind_under_its_own_name() -> None:
    assert sorted(RUNNERS) == ["agent_prompt", "command", "file", "slack", "webhook"]
    assert all(runner.kind == kind for kind, runner in RUNNERS.items())


def test_looking_up_an_unknown_kind_is_a_parameter_error_on_kind() -> None:
    with pytest.raises(ParameterError) as info:
        get_runner("shell")
    assert info.value.field == "kind"
    assert str(info.value) == "kind: unknown kind 'shell'; available kinds: agent_prompt, command, file, slack, webhook"


def test_an_invalid_bundle_is_a_parameter_error_naming_the_dotted_path() -> None:
    with pytest.raises(ParameterError) as info:
        parse_bundle({"actions": [{"id": "a", "kind": "webhook"}, {"id": "a", "kind": "webhook"}]})
    assert info.value.field == "actionBundle.actions[1].id"
    assert info.value.message == "duplicate action id 'a'"


@pytest.mark.parametrize(
    ("kind", "parameters", "message"),
    [
        ("webhook", {"url": "gopher://x"}, "url: must be an http or https URL"),
        ("command", {"argv": ["/bin/echo"]}, "argv: command actions are disabled"),
        ("file", {"path": "x.txt", "content": "y"}, "path: file actions are disabled"),
    ],
)
def test_an_attempt_with_parameters_that_no_longer_parse_fails_for_good(
    settings: Any, kind: str, parameters: dict[str, Any], message: str
) -> None:
    settings.MINOOTS_COMMAND_ALLOWLIST = []
    settings.MINOOTS_FILE_ROOT = ""
    context = ActionContext(run_id="run", timer_id="timer", tenant_id="acme", timer={})

    with pytest.raises(ActionError) as info:
        get_runner(kind).run(parameters, context)

    assert info.value.permanent
    assert str(info.value).startswith(message)
