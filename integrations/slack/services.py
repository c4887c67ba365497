"""What a slash command or a button does: each function takes what Slack sent, calls the timers
services, and returns the answer Slack shows. Nothing here waits on Slack: the view answers at
once, and the message update after a button goes through a task on the actions queue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rest_framework.exceptions import ErrorDetail, ValidationError
from slack_sdk.errors import SlackApiError

from actions.errors import ActionError
from actions.models import ActionRun
from actions.runners import slack as slack_runner
from integrations.slack import grammar, messages, selectors
from integrations.slack.selectors import CHANNEL_LABEL, TEAM_LABEL, NoMatch, Workspace
from timers.api.serializers import MAX_NAME, TimerCreateInput, parse_rfc3339
from timers.durations import DurationError, parse_duration
from timers.keys import tenant_get_or_create
from timers.models import PENDING_STATUSES, Tenant, Timer
from timers.publishing import publish
from timers.selectors import tenant_get
from timers.services import ServiceError, TimerSpec, request_fingerprint, timer_cancel, timer_create

log = logging.getLogger(__name__)

UPDATE_MESSAGE = "integrations.slack.update_message"
REGION_LABEL = "minoots.io/region"
NOTIFY_ACTION_ID = "slack"
LIST_LIMIT = 20
NOT_CONNECTED = (
    "This Slack workspace is not connected to MINOOTS. An operator connects it in the admin "
    "(Slack workspaces), or sets SLACK_DEFAULT_TENANT for a single-workspace install."
)


@dataclass(frozen=True)
class SlashCommand:
    """The fields of a slash-command request that MINOOTS uses."""

    team_id: str
    channel_id: str
    user_id: str
    text: str
    response_url: str = ""

    @property
    def requested_by(self) -> str:
        return f"slack:{self.team_id}:{self.user_id}"


def _tenant(workspace: Workspace) -> Tenant:
    tenant = tenant_get(tenant_id=workspace.tenant_id)
    if tenant is None:  # the single-workspace install's tenant, on first use
        tenant, _ = tenant_get_or_create(tenant_id=workspace.tenant_id)
    return tenant


def command_answer(*, command: SlashCommand, now: datetime | None = None) -> dict[str, Any]:
    """The ephemeral answer to ``/ato <text>`` (a timer set, listed, cancelled, or why not)."""
    now = now or timezone.now()
    workspace = selectors.workspace_for_team(team_id=command.team_id)
    if workspace is None:
        return messages.ephemeral(NOT_CONNECTED)
    try:
        parsed = grammar.parse(command.text, now=now)
        if isinstance(parsed, grammar.Help):
            return messages.ephemeral(grammar.HELP)
        tenant = _tenant(workspace)
        if isinstance(parsed, grammar.ListTimers):
            return messages.ephemeral(_list(tenant, command, now))
        if isinstance(parsed, grammar.Cancel):
            return messages.ephemeral(_cancel(tenant, command, parsed.reference))
        if isinstance(parsed, grammar.Status):
            return messages.ephemeral(_status(tenant, command, parsed.reference, now))
        timer = _create(tenant, command, parsed, now)
        return messages.ephemeral(messages.created(timer, now=timezone.now()))
    except (grammar.GrammarError, NoMatch) as exc:
        return messages.ephemeral(f"⚠️ {exc}")
    except ServiceError as exc:
        return messages.ephemeral(f"⚠️ {_field_message(exc.message)}")


def _field_message(message: str) -> str:
    """``fireAt: must be in the future`` as the user typed it: ``--fire-at: ...``."""
    field, sep, reason = message.partition(": ")
    return f"{grammar.FLAG_NAMES.get(field, field)}: {reason}" if sep else message


def notify_action(*, channel_id: str, team_id: str, text: str) -> dict[str, Any]:
    """The ``slack`` action every timer set from Slack gets: a post with snooze buttons."""
    return {
        "id": NOTIFY_ACTION_ID,
        "kind": "slack",
        "parameters": {"channel": channel_id, "teamId": team_id, "text": text, "snooze": True},
    }


def _lead_time(when: dict[str, Any], now: datetime) -> timedelta:
    """How long before firing the timer is set (for "set by @user 10 minutes ago")."""
    try:
        if "duration" in when:
            return parse_duration(when["duration"])
        return parse_rfc3339(when["fireAt"]) - now
    except (DurationError, ValidationError):  # refused below, by the create serializer
        return timedelta(0)


def _with_notify(bundle: Any, notify: dict[str, Any]) -> Any:
    """``--action-bundle`` plus the channel post, unless it already has a ``slack`` action."""
    if bundle is None:
        return {"actions": [notify]}
    actions = bundle.get("actions") if isinstance(bundle, dict) else None
    if not isinstance(actions, list) or any(isinstance(a, dict) and a.get("kind") == "slack" for a in actions):
        return bundle  # the serializer refuses a malformed bundle with its own message
    ids = {a.get("id") for a in actions if isinstance(a, dict)}
    if notify["id"] in ids:
        notify = {**notify, "id": "slack-notify"}
    return {**bundle, "actions": [*actions, notify]}


def _create(tenant: Tenant, command: SlashCommand, parsed: grammar.Create, now: datetime) -> Timer:
    fields = dict(parsed.fields)
    claimed = fields.pop("requestedBy", None)
    if claimed not in (None, command.requested_by):
        raise grammar.GrammarError(
            f"`--requested-by` names who set the timer; from Slack that is you (`{command.requested_by}`)"
        )
    name = str(fields.pop("name", "") or parsed.note[:MAX_NAME] or "slack timer")
    metadata = dict(fields.pop("metadata", None) or {})
    if parsed.note:
        metadata["slack_note"] = parsed.note
    metadata["slack"] = {"teamId": command.team_id, "channelId": command.channel_id, "userId": command.user_id}
    labels = fields.pop("labels", None)
    labels = dict(labels) if isinstance(labels, dict) else labels
    region = fields.pop("region", None)
    if isinstance(labels, dict) or labels is None:
        labels = {**(labels or {}), CHANNEL_LABEL: command.channel_id, TEAM_LABEL: command.team_id}
        if region:
            labels.setdefault(REGION_LABEL, str(region))
    text = messages.fired_text(
        label=messages.label_of(name, parsed.note), user_id=command.user_id, ago=_lead_time(parsed.when, now)
    )
    notify = notify_action(channel_id=command.channel_id, team_id=command.team_id, text=text)
    body: dict[str, Any] = {
        "name": name,
        **parsed.when,
        "metadata": metadata,
        "labels": labels,
        "actionBundle": _with_notify(fields.pop("actionBundle", None), notify),
        "agentBinding": fields.pop("agentBinding", None),
    }
    serializer = TimerCreateInput(data=body, tenant_id=tenant.id)
    if not serializer.is_valid():
        raise grammar.GrammarError(_serializer_message(serializer.errors))
    timer, _ = timer_create(tenant=tenant, spec=serializer.to_spec(requested_by=command.requested_by), refuse_past=True)
    return timer


def _serializer_message(errors: Any) -> str:
    """The first error of the create serializer, naming the flag."""
    for field, problems in dict(errors).items():
        problem: Any = problems
        while isinstance(problem, (list, dict)) and problem:
            problem = problem[0] if isinstance(problem, list) else next(iter(problem.values()))
        text = str(problem) if isinstance(problem, (str, ErrorDetail)) else "is not valid"
        if field == "non_field_errors":
            return text
        return f"{grammar.FLAG_NAMES.get(field, field)}: {text}"
    return "the timer is not valid"


def _list(tenant: Tenant, command: SlashCommand, now: datetime) -> str:
    timers = selectors.timers_pending_in_channel(
        tenant=tenant, team_id=command.team_id, user_id=command.user_id, channel_id=command.channel_id
    )
    shown = list(timers[: LIST_LIMIT + 1])
    more = timers.count() - LIST_LIMIT if len(shown) > LIST_LIMIT else 0
    return messages.listing(shown[:LIST_LIMIT], now=now, more=more)


def _cancel(tenant: Tenant, command: SlashCommand, reference: str) -> str:
    ours = selectors.slack_timers(tenant=tenant, team_id=command.team_id)
    try:
        timer = selectors.timer_by_reference(timers=ours.filter(status__in=PENDING_STATUSES), reference=reference)
    except NoMatch:
        # Not pending: say what became of it, if the reference names exactly one.
        done = selectors.timer_by_reference(timers=ours, reference=reference)
        return f"Timer `{messages.short_id(done)}` *{done.name}* is already {done.status}; nothing to cancel."
    timer = timer_cancel(timer=timer, reason="cancelled from Slack", by=command.requested_by)
    return f"🛑 Timer `{messages.short_id(timer)}` *{timer.name}* is {timer.status}."


def _status(tenant: Tenant, command: SlashCommand, reference: str, now: datetime) -> str:
    timer = selectors.timer_by_reference(
        timers=selectors.slack_timers(tenant=tenant, team_id=command.team_id), reference=reference
    )
    runs = [
        (str(a), str(k), str(s))
        for a, k, s in ActionRun.objects.filter(timer=timer)
        .order_by("escalation_level", "position")
        .values_list("action_id", "kind", "status")
    ]
    return messages.status(timer, now=now, runs=runs)


# --- buttons ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ButtonPress:
    """A click on a fired message's button (a ``block_actions`` payload)."""

    team_id: str
    user_id: str
    action_id: str
    timer_id: str  # the button's value
    channel_id: str = ""
    message_ts: str = ""
    message_text: str = ""
    response_url: str = ""


def button_answer(*, press: ButtonPress) -> dict[str, Any] | None:
    """Snooze (a follow-up timer linked to the first in its metadata) or Done; the message is
    updated after commit through UPDATE_MESSAGE. Returns an ephemeral answer, or None when
    the message update says it all."""
    workspace = selectors.workspace_for_team(team_id=press.team_id)
    if workspace is None:
        return messages.ephemeral(NOT_CONNECTED)
    if press.action_id not in (*slack_runner.SNOOZE_ACTIONS, slack_runner.DONE_ACTION):
        return None  # not one of ours
    tenant = _tenant(workspace)
    try:
        timer_id = UUID(press.timer_id)
    except ValueError:
        return messages.ephemeral("⚠️ this button does not name a timer")
    timer = selectors.slack_timers(tenant=tenant, team_id=press.team_id).filter(pk=timer_id).first()
    if timer is None:
        return messages.ephemeral("⚠️ that timer no longer exists")
    original = press.message_text or messages.label_of(timer.name, str(timer.metadata.get("slack_note") or ""))
    if press.action_id == slack_runner.DONE_ACTION:
        outcome = f"✅ Done — <@{press.user_id}>"
    else:
        try:
            follow_up = snooze(tenant=tenant, timer=timer, press=press)
        except ServiceError as exc:
            return messages.ephemeral(f"⚠️ could not snooze: {exc.message}")
        label, _ = slack_runner.SNOOZE_ACTIONS[press.action_id]
        outcome = (
            f"💤 {label} by <@{press.user_id}>: timer `{messages.short_id(follow_up)}` fires "
            f"{messages.slack_date(follow_up.fire_at)}"
        )
    text, blocks = messages.after_button(original=original, outcome=outcome)
    update = {
        "tenant_id": tenant.id,
        "team_id": press.team_id,
        "channel": press.channel_id,
        "ts": press.message_ts,
        "text": text,
        "blocks": blocks,
        "response_url": press.response_url,
    }
    transaction.on_commit(lambda: _publish_update(update))
    return None


def snooze(*, tenant: Tenant, timer: Timer, press: ButtonPress) -> Timer:
    """The follow-up of ``timer`` in 5 min or 1 h: same name, note and labels, the same
    channel post, ``metadata.snoozedFrom`` = the first timer's id. Once per fired message: a
    second click (a double click, or the other button) gets the follow-up already made."""
    _, duration = slack_runner.SNOOZE_ACTIONS[press.action_id]
    note = str(timer.metadata.get("slack_note") or "")
    slack = timer.metadata.get("slack") if isinstance(timer.metadata.get("slack"), dict) else {}
    channel = press.channel_id or str(slack.get("channelId") or "")
    metadata = {
        **({"slack_note": note} if note else {}),
        "slack": {"teamId": press.team_id, "channelId": channel, "userId": press.user_id},
        "snoozedFrom": str(timer.pk),
    }
    text = messages.fired_text(
        label=messages.label_of(timer.name, note),
        user_id=press.user_id,
        ago=parse_duration(duration),
        snoozed=True,
    )
    spec = TimerSpec(
        name=timer.name,
        duration=parse_duration(duration),
        requested_by=f"slack:{press.team_id}:{press.user_id}",
        metadata=metadata,
        labels={**timer.labels, CHANNEL_LABEL: channel, TEAM_LABEL: press.team_id},
        action_bundle={"actions": [notify_action(channel_id=channel, team_id=press.team_id, text=text)]},
    )
    follow_up, _ = timer_create(
        tenant=tenant,
        spec=spec,
        idempotency_key=f"slack-snooze:{timer.pk}",
        fingerprint=request_fingerprint({"snoozedFrom": str(timer.pk)}),
    )
    return follow_up


def _publish_update(update: dict[str, Any]) -> None:
    try:
        publish(UPDATE_MESSAGE, kwargs=update)
    except Exception:
        log.error("could not publish the Slack message update", exc_info=True)


def message_update(
    *,
    tenant_id: str,
    team_id: str,
    channel: str,
    ts: str,
    text: str,
    blocks: list[dict[str, Any]],
    response_url: str = "",
    timeout_ms: int = 10_000,
) -> str:
    """Replace a fired message (chat.update with the workspace's token, else its
    response_url). Raises ActionError; a transient one is worth retrying."""
    token = slack_runner.bot_token(tenant_id, team_id)
    if token and channel and ts:
        client = slack_runner.web_client(token, timeout_s=timeout_ms / 1000)
        try:
            slack_runner.within(
                timeout_ms / 1000,
                lambda: client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks),
                what="chat.update",
            )
            return "chat.update"
        except SlackApiError as exc:
            failure = slack_runner.api_failure(exc, method="chat.update")
            if not failure.permanent or not response_url:
                raise failure from exc
        except ActionError:
            raise
        except Exception as exc:
            raise slack_runner.call_failure(exc, what="chat.update") from exc
    if response_url:
        slack_runner.post_response_url(
            response_url, {"replace_original": True, "text": text, "blocks": blocks}, timeout_ms=timeout_ms
        )
        return "response_url"
    raise ActionError("no way to update the message (no bot token and no response_url)", permanent=True)


def signing_secret() -> str:
    return str(settings.SLACK_SIGNING_SECRET)
