"""Reads: which tenant and bot token a Slack workspace has, and the timers set from Slack."""

from __future__ import annotations

import re
from dataclasses import dataclass
from uuid import UUID

from django.conf import settings
from django.db.models import QuerySet

from integrations.slack.models import SlackWorkspace
from timers.models import PENDING_STATUSES, Tenant, Timer
from timers.selectors import timers_list

CHANNEL_LABEL = "slack.channel"
TEAM_LABEL = "slack.team"
MIN_PREFIX = 4
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class Workspace:
    """A connected workspace; ``tenant_id`` may not exist yet for the default tenant."""

    team_id: str
    tenant_id: str
    bot_token: str

    def __repr__(self) -> str:  # never the token
        return f"Workspace({self.team_id!r}, tenant={self.tenant_id!r})"


def workspace_for_team(*, team_id: str) -> Workspace | None:
    """The workspace's row, else the single-workspace install of the settings
    (SLACK_DEFAULT_TENANT, SLACK_BOT_TOKEN), else None: not connected."""
    row = SlackWorkspace.objects.filter(pk=team_id).values_list("tenant_id", "bot_token").first()
    if row is not None:
        return Workspace(team_id=team_id, tenant_id=row[0], bot_token=row[1])
    if settings.SLACK_DEFAULT_TENANT:
        return Workspace(team_id=team_id, tenant_id=settings.SLACK_DEFAULT_TENANT, bot_token=settings.SLACK_BOT_TOKEN)
    return None


def workspace_bot_token(tenant_id: str, team_id: str | None) -> str | None:
    """The bot token the ``slack`` action of ``tenant_id`` posts with: the named workspace's when
    it is this tenant's, or the tenant's only workspace; SLACK_BOT_TOKEN for SLACK_DEFAULT_TENANT."""
    rows = SlackWorkspace.objects.filter(tenant_id=tenant_id)
    if team_id is not None:
        rows = rows.filter(pk=team_id)
    tokens = list(rows.values_list("bot_token", flat=True)[:2])
    if len(tokens) == 1 and tokens[0]:
        return tokens[0]
    if not tokens and tenant_id == settings.SLACK_DEFAULT_TENANT and settings.SLACK_BOT_TOKEN:
        return str(settings.SLACK_BOT_TOKEN)
    return None


def slack_timers(*, tenant: Tenant, team_id: str) -> QuerySet[Timer]:
    """The tenant's timers set from this workspace (``requestedBy`` slack:<team>:...)."""
    return Timer.objects.filter(tenant=tenant, requested_by__startswith=f"slack:{team_id}:")


def timers_pending_in_channel(*, tenant: Tenant, team_id: str, user_id: str, channel_id: str) -> QuerySet[Timer]:
    """The caller's pending timers set in this channel, newest first."""
    return timers_list(tenant=tenant, status=list(PENDING_STATUSES), labels=[(CHANNEL_LABEL, channel_id)]).filter(
        requested_by=f"slack:{team_id}:{user_id}"
    )


class NoMatch(Exception):
    """No timer, or more than one, answers to a reference; the message says which."""


def timer_by_reference(*, timers: QuerySet[Timer], reference: str) -> Timer:
    """The one timer of ``timers`` whose id is ``reference`` or starts with it (at least
    MIN_PREFIX hex digits, dashes ignored); NoMatch with a message otherwise."""
    text = reference.strip().strip("`").lower()
    digits = text.replace("-", "")
    if not _HEX.fullmatch(digits or "-") or len(digits) > 32:
        raise NoMatch(f"'{reference[:40]}' is not a timer id (the hex id `/ato list` shows)")
    if len(digits) < MIN_PREFIX:
        raise NoMatch(f"give at least {MIN_PREFIX} characters of the timer id")
    if len(digits) == 32:
        matches = list(timers.filter(pk=UUID(digits))[:1])
    else:
        matches = list(timers.filter(id__startswith=digits).order_by("-created_at")[:6])
    if not matches:
        raise NoMatch(f"no timer of yours matches `{text}`")
    if len(matches) > 1:
        listed = ", ".join(f"`{str(t.pk)[:8]}` {t.name[:40]}" for t in matches[:5])
        more = " and more" if len(matches) > 5 else ""
        raise NoMatch(f"`{text}` matches several timers ({listed}{more}); give more of the id")
    return matches[0]
