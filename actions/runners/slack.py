"""``slack``: post a message with ``chat.postMessage`` (the workspace's bot token), or to a
``responseUrl`` Slack handed out, through slack_sdk.

Parameters: ``channel`` or ``responseUrl`` (exactly one), ``text`` and/or ``blocks``,
``teamId`` (which of the tenant's workspaces; needed only when it has several), ``snooze``
(append *Snooze 5 min* / *Snooze 1 h* / *Done* buttons carrying the timer's id, answered by
``integrations.slack``), ``timeoutMs``.

Safety: the Web API is only ever ``SLACK_API_URL`` (an operator setting, Slack's own by
default); a ``responseUrl`` must be one of Slack's (``https://hooks.slack.com/...``) or on
``SLACK_API_URL``'s own host (a local fake in tests), so a tenant cannot aim an action at any
other address. ``timeoutMs`` is a hard deadline for the whole attempt: slack_sdk's ``timeout``
bounds each socket operation only, so the call runs in a small pool and the attempt ends at
its deadline whatever the server does (the call left behind ends at its socket timeout).

Outcomes: 429 (or ``ratelimited``) is transient with Slack's ``Retry-After``; 5xx and
Slack's own transient errors are retried; ``invalid_auth``, ``channel_not_found``,
``not_in_channel`` and every other error Slack names are permanent (a retry sends the same).

The bot token comes from the layer above (``integrations.slack`` registers the lookup at
start-up: actions never imports it); it is never logged nor stored with the attempt.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from django.conf import settings
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from actions.errors import ActionError, ParameterError
from actions.runners.base import ActionContext, ActionResult, Runner, is_utf8

MAX_TIMEOUT_MS = 30_000
MAX_TEXT = 40_000  # Slack truncates longer texts
MAX_BLOCKS = 50  # Slack's limit for a message
MAX_BLOCKS_BYTES = 64 * 1024
SLACK_RESPONSE_HOSTS = frozenset({"hooks.slack.com"})
SNOOZE_ACTIONS = {"minoots_snooze_5m": ("Snooze 5 min", "5m"), "minoots_snooze_1h": ("Snooze 1 h", "1h")}
DONE_ACTION = "minoots_done"
# Slack errors worth another attempt (https://api.slack.com/methods/chat.postMessage#errors).
TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout", "team_added_to_org"}
)
_PARAMETERS = ("channel", "responseUrl", "text", "blocks", "teamId", "snooze", "timeoutMs")

# slack_sdk logs request headers (the bot token) at DEBUG when its logger's level allows it:
# its own logger, never below INFO whatever LOG_LEVEL says.
_sdk_log = logging.getLogger("minoots.slack_sdk")
_sdk_log.setLevel(logging.INFO)

# (tenant id, team id or None) -> the bot token, or None when no workspace is connected.
TokenLookup = Callable[[str, str | None], str | None]
_token_lookup: TokenLookup | None = None


def register_token_lookup(lookup: TokenLookup) -> None:
    """Called by ``integrations.slack`` at start-up (``SlackConfig.ready``)."""
    global _token_lookup
    _token_lookup = lookup


def bot_token(tenant_id: str, team_id: str | None) -> str | None:
    return _token_lookup(tenant_id, team_id) if _token_lookup is not None else None


def api_url() -> str:
    url: str = settings.SLACK_API_URL
    return url if url.endswith("/") else url + "/"


def response_url_refusal(url: str) -> str | None:
    """Why ``url`` may not receive a response_url post, or None: it must be Slack's
    (https://hooks.slack.com/...) or on SLACK_API_URL's scheme, host and port."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        return "must not contain whitespace or control characters"
    if parts.scheme == "https" and (parts.hostname or "") in SLACK_RESPONSE_HOSTS and port in (None, 443):
        return None
    api = urlsplit(api_url())
    if (parts.scheme, parts.hostname, port) == (api.scheme, api.hostname, api.port) and parts.hostname:
        return None
    return "must be a Slack response_url (https://hooks.slack.com/...)"


T = TypeVar("T")
_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None


def _calls() -> ThreadPoolExecutor:
    """The pool Slack calls run in (one per process: a forked child inherits no threads)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(max_workers=16, thread_name_prefix="slack-call"))
        return _pool[1]


def within(seconds: float, call: Callable[[], T], *, what: str) -> T:
    """``call()``, or a transient ActionError once ``seconds`` have passed (hard deadline)."""
    future: Future[T] = _calls().submit(call)
    try:
        return future.result(timeout=max(seconds, 0.001))
    except FutureTimeout as exc:
        raise ActionError(f"timed out after {int(seconds * 1000)} ms ({what})", permanent=False) from exc


def web_client(token: str, *, timeout_s: float) -> WebClient:
    # retry_handlers=[]: retries are the engine's (backoff, Retry-After, attempt records).
    return WebClient(
        token=token, base_url=api_url(), timeout=max(1, int(timeout_s + 0.999)), retry_handlers=[], logger=_sdk_log
    )


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    value = next((v for k, v in dict(headers).items() if str(k).lower() == "retry-after"), None)
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return max(0.0, float(str(value).strip())) if value is not None else None
    except ValueError:
        return None


def api_failure(exc: SlackApiError, *, method: str) -> ActionError:
    """The ActionError of a Web API call Slack refused (see the module docstring)."""
    response = exc.response
    status = int(response.status_code)
    data = response.data if isinstance(response.data, dict) else {}
    error = str(data.get("error") or f"HTTP {status}")
    output = json.dumps(data)[:2000] if data else ""
    if status == 429 or error == "ratelimited":
        return ActionError(
            f"{method}: rate limited by Slack ({error})",
            permanent=False,
            retry_after=_retry_after(response.headers),
            http_status=status,
            output=output,
        )
    transient = status >= 500 or error in TRANSIENT_ERRORS
    return ActionError(f"{method}: {error}", permanent=not transient, http_status=status, output=output)


def call_failure(exc: Exception, *, what: str) -> ActionError:
    """A call that got no answer from Slack (connection refused, reset, socket timeout)."""
    return ActionError(f"{what}: no answer from Slack: {type(exc).__name__}: {exc}", permanent=False)


def post_response_url(url: str, body: dict[str, Any], *, timeout_ms: int) -> ActionResult:
    """POST ``body`` to a response_url within ``timeout_ms``; ActionError otherwise."""
    refusal = response_url_refusal(url)
    if refusal is not None:
        raise ActionError(f"responseUrl {refusal}", permanent=True)
    seconds = timeout_ms / 1000
    client = WebhookClient(url=url, timeout=max(1, int(seconds + 0.999)), retry_handlers=[], logger=_sdk_log)
    try:
        response = within(seconds, lambda: client.send_dict(body), what="response_url")
    except ActionError:
        raise
    except Exception as exc:
        raise call_failure(exc, what="response_url") from exc
    status = response.status_code
    output = str(response.body or "")[:2000]
    if status == 200:
        return ActionResult(summary="posted to response_url", http_status=status, output=output)
    if status == 429:
        raise ActionError(
            "response_url: rate limited by Slack",
            permanent=False,
            retry_after=_retry_after(response.headers),
            http_status=status,
            output=output,
        )
    # 404 expired_url / used_url: a response_url works 5 times within 30 minutes.
    raise ActionError(
        f"response_url: HTTP {status} {output[:100]}".rstrip(),
        permanent=status < 500,
        http_status=status,
        output=output,
    )


def snooze_buttons(timer_id: str) -> dict[str, Any]:
    """The actions block of a fired message: each button carries the timer's id."""
    elements: list[dict[str, Any]] = [
        {"type": "button", "action_id": action_id, "text": {"type": "plain_text", "text": label}, "value": timer_id}
        for action_id, (label, _) in SNOOZE_ACTIONS.items()
    ]
    elements.append(
        {
            "type": "button",
            "action_id": DONE_ACTION,
            "style": "primary",
            "text": {"type": "plain_text", "text": "Done"},
            "value": timer_id,
        }
    )
    return {"type": "actions", "block_id": "minoots_timer", "elements": elements}


@dataclass(frozen=True)
class SlackParams:
    channel: str | None
    response_url: str | None
    text: str
    blocks: list[dict[str, Any]] | None
    team_id: str | None
    snooze: bool
    timeout_ms: int

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "timeoutMs": self.timeout_ms}
        if self.channel is not None:
            out["channel"] = self.channel
        if self.response_url is not None:
            out["responseUrl"] = self.response_url
        if self.blocks is not None:
            out["blocks"] = self.blocks
        if self.team_id is not None:
            out["teamId"] = self.team_id
        if self.snooze:
            out["snooze"] = True
        return out


def _optional_str(parameters: dict[str, Any], name: str, *, max_length: int) -> str | None:
    value = parameters.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or not is_utf8(value):
        raise ParameterError(name, "must be a non-empty string")
    if len(value) > max_length:
        raise ParameterError(name, f"must be at most {max_length} characters")
    return value


class SlackRunner(Runner[SlackParams]):
    kind = "slack"

    def parse(self, parameters: dict[str, Any], *, tenant_id: str) -> SlackParams:
        unknown = sorted(set(parameters) - set(_PARAMETERS))
        if unknown:
            raise ParameterError(unknown[0], f"unknown parameter; allowed: {', '.join(_PARAMETERS)}")
        channel = _optional_str(parameters, "channel", max_length=80)
        response_url = _optional_str(parameters, "responseUrl", max_length=2048)
        if (channel is None) == (response_url is None):
            raise ParameterError("channel", "give exactly one of 'channel' or 'responseUrl'")
        if response_url is not None:
            refusal = response_url_refusal(response_url)
            if refusal is not None:
                raise ParameterError("responseUrl", refusal)
        text = parameters.get("text", "")
        if not isinstance(text, str) or not is_utf8(text):
            raise ParameterError("text", "must be a string")
        if len(text) > MAX_TEXT:
            raise ParameterError("text", f"must be at most {MAX_TEXT} characters")
        blocks = parameters.get("blocks")
        if blocks is not None:
            if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
                raise ParameterError("blocks", "must be a list of Block Kit block objects")
            if len(blocks) > MAX_BLOCKS:
                raise ParameterError("blocks", f"at most {MAX_BLOCKS} blocks")
            encoded = json.dumps(blocks, separators=(",", ":"))
            if not is_utf8(encoded) or len(encoded.encode()) > MAX_BLOCKS_BYTES:
                raise ParameterError("blocks", f"must be valid Unicode and at most {MAX_BLOCKS_BYTES // 1024} KiB")
        if not text.strip() and not blocks:
            raise ParameterError("text", "is required (or 'blocks')")
        team_id = _optional_str(parameters, "teamId", max_length=32)
        snooze = parameters.get("snooze", False)
        if not isinstance(snooze, bool):
            raise ParameterError("snooze", "must be true or false")
        timeout_ms = parameters.get("timeoutMs", min(settings.ACTION_WEBHOOK_TIMEOUT_MS, MAX_TIMEOUT_MS))
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or not 1 <= timeout_ms <= MAX_TIMEOUT_MS:
            raise ParameterError("timeoutMs", f"must be an integer between 1 and {MAX_TIMEOUT_MS}")
        return SlackParams(
            channel=channel,
            response_url=response_url,
            text=text,
            blocks=list(blocks) if blocks is not None else None,
            team_id=team_id,
            snooze=snooze,
            timeout_ms=timeout_ms,
        )

    def parse_at_create(self, parameters: dict[str, Any], *, tenant_id: str) -> SlackParams:
        params = self.parse(parameters, tenant_id=tenant_id)
        if params.channel is not None and bot_token(tenant_id, params.team_id) is None:
            where = f" '{params.team_id}'" if params.team_id else ""
            raise ParameterError(
                "channel", f"tenant '{tenant_id}' has no Slack workspace{where} connected (a bot token)"
            )
        return params

    def attempt(self, params: SlackParams, context: ActionContext) -> ActionResult:
        body: dict[str, Any] = {"text": params.text}
        blocks = list(params.blocks) if params.blocks is not None else None
        if params.snooze:
            if blocks is None:
                blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": params.text}}]
            blocks.append(snooze_buttons(context.timer_id))
        if blocks is not None:
            body["blocks"] = blocks
        if params.response_url is not None:
            return post_response_url(
                params.response_url, {**body, "response_type": "in_channel"}, timeout_ms=params.timeout_ms
            )
        assert params.channel is not None  # parse: exactly one of channel / responseUrl
        token = bot_token(context.tenant_id, params.team_id)
        if token is None:
            raise ActionError(f"tenant '{context.tenant_id}' has no Slack workspace connected", permanent=True)
        seconds = params.timeout_ms / 1000
        client = web_client(token, timeout_s=seconds)
        channel = params.channel
        try:
            response = within(
                seconds,
                lambda: client.chat_postMessage(channel=channel, unfurl_links=False, **body),
                what="chat.postMessage",
            )
        except ActionError:
            raise
        except SlackApiError as exc:
            raise api_failure(exc, method="chat.postMessage") from exc
        except Exception as exc:
            raise call_failure(exc, what="chat.postMessage") from exc
        ts = str(response.get("ts") or "")
        return ActionResult(
            summary=f"posted to {response.get('channel') or channel} (ts {ts})",
            http_status=response.status_code,
            output=json.dumps({"channel": response.get("channel"), "ts": ts}),
        )
