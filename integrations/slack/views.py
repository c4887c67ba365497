"""Slack's two request URLs: slash commands and interactivity (buttons).

Both verify Slack's v0 signature with slack_sdk's ``SignatureVerifier`` over the raw body
(``SLACK_SIGNING_SECRET``; a timestamp more than 5 minutes away is refused) and answer 401 in
the one JSON error shape otherwise. They answer at once: creating, listing or cancelling a
timer is a few rows, well inside Slack's 3 seconds; the only slow work, updating a message
after a button, is a task on the actions queue.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from slack_sdk.signature import SignatureVerifier

from integrations.slack import services
from timers.api.errors import json_error

log = logging.getLogger(__name__)


def _refusal(request: HttpRequest) -> HttpResponse | None:
    """None for a request Slack signed; the error response otherwise."""
    secret = services.signing_secret()
    if not secret:
        return json_error("The Slack integration is off: SLACK_SIGNING_SECRET is not set", 503)
    timestamp = request.headers.get("X-Slack-Request-Timestamp")
    signature = request.headers.get("X-Slack-Signature")
    if not timestamp or not signature:
        return json_error("Missing Slack signature (X-Slack-Signature, X-Slack-Request-Timestamp)", 401)
    if not timestamp.isascii() or not timestamp.isdigit():
        return json_error("Invalid Slack request timestamp", 401)
    verifier = SignatureVerifier(secret)
    if abs(verifier.clock.now() - int(timestamp)) > 60 * 5:
        return json_error("Slack request timestamp is more than 5 minutes away (replayed?)", 401)
    if not verifier.is_valid(body=request.body, timestamp=timestamp, signature=signature):
        return json_error("Invalid Slack signature", 401)
    return None


def _form(request: HttpRequest) -> dict[str, str]:
    # request.POST: the body is application/x-www-form-urlencoded, as Slack sends it.
    return {key: request.POST.get(key, "") for key in request.POST}


@csrf_exempt
@require_POST
def commands(request: HttpRequest) -> HttpResponse:
    """``/ato``: the ephemeral answer is the response body (no follow-up needed)."""
    refused = _refusal(request)
    if refused is not None:
        return refused
    form = _form(request)
    if not form.get("team_id") or not form.get("user_id"):
        return json_error("Not a slash command: team_id and user_id are required", 400)
    command = services.SlashCommand(
        team_id=form["team_id"],
        channel_id=form.get("channel_id", ""),
        user_id=form["user_id"],
        text=form.get("text", ""),
        response_url=form.get("response_url", ""),
    )
    return JsonResponse(services.command_answer(command=command))


@csrf_exempt
@require_POST
def interactive(request: HttpRequest) -> HttpResponse:
    """Buttons of fired messages (``block_actions``); anything else is acknowledged and ignored."""
    refused = _refusal(request)
    if refused is not None:
        return refused
    try:
        payload: Any = json.loads(request.POST.get("payload", ""))
    except json.JSONDecodeError:
        return json_error("payload: not JSON", 400)
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return HttpResponse(status=200)
    press = _press(payload)
    if press is None:
        return HttpResponse(status=200)
    answer = services.button_answer(press=press)
    return JsonResponse(answer) if answer is not None else HttpResponse(status=200)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _press(payload: dict[str, Any]) -> services.ButtonPress | None:
    def part(name: str) -> dict[str, Any]:
        value = payload.get(name)
        return value if isinstance(value, dict) else {}

    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        return None
    action = actions[0]
    team_id = _text(part("team").get("id")) or _text(part("user").get("team_id"))
    user_id = _text(part("user").get("id"))
    if not team_id or not user_id:
        return None
    container, message = part("container"), part("message")
    return services.ButtonPress(
        team_id=team_id,
        user_id=user_id,
        action_id=_text(action.get("action_id")),
        timer_id=_text(action.get("value")),
        channel_id=_text(part("channel").get("id")) or _text(container.get("channel_id")),
        message_ts=_text(container.get("message_ts")) or _text(message.get("ts")),
        message_text=_text(message.get("text")),
        response_url=_text(payload.get("response_url")),
    )
