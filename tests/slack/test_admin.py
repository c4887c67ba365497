"""Slack workspaces in the admin: the bot token is set, replaced or kept, never shown back."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from integrations.slack.models import SlackWorkspace
from timers.models import Tenant

pytestmark = pytest.mark.django_db

TOKEN = "xoxb-1111-secret-token-value"


@pytest.fixture
def staff(db: Any) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("op", "op@example.com", "pw"))
    return client


def test_a_workspace_is_connected_with_a_token_that_is_never_shown_back(staff: Client, tenant: Tenant) -> None:
    response = staff.post(
        "/admin/slack/slackworkspace/add/",
        {"team_id": "T0NEW", "name": "Kitchen", "tenant": tenant.pk, "bot_token": TOKEN},
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert SlackWorkspace.objects.get(pk="T0NEW").bot_token == TOKEN

    for page in ("/admin/slack/slackworkspace/", "/admin/slack/slackworkspace/T0NEW/change/"):
        body = staff.get(page).content.decode()
        assert "Kitchen" in body
        assert TOKEN not in body and "secret-token" not in body


def test_an_empty_token_on_change_keeps_the_current_one(staff: Client, tenant: Tenant) -> None:
    SlackWorkspace.objects.create(team_id="T0OLD", tenant=tenant, bot_token=TOKEN)
    response = staff.post(
        "/admin/slack/slackworkspace/T0OLD/change/", {"name": "Renamed", "tenant": tenant.pk, "bot_token": ""}
    )
    assert response.status_code == 302
    workspace = SlackWorkspace.objects.get(pk="T0OLD")
    assert (workspace.name, workspace.bot_token) == ("Renamed", TOKEN)


def test_a_new_workspace_needs_a_token(staff: Client, tenant: Tenant) -> None:
    response = staff.post("/admin/slack/slackworkspace/add/", {"team_id": "T0X", "tenant": tenant.pk, "bot_token": ""})
    assert response.status_code == 200
    assert "A bot token is required" in response.content.decode()
    assert not SlackWorkspace.objects.exists()


def test_the_token_is_not_in_the_workspaces_repr(tenant: Tenant) -> None:
    workspace = SlackWorkspace.objects.create(team_id="T0R", tenant=tenant, bot_token=TOKEN)
    assert TOKEN not in repr(workspace) and TOKEN not in str(workspace)
