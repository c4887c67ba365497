"""A Slack workspace connected to a tenant, with its bot token.

The token is a secret: the admin never shows it back (integrations/slack/admin.py), ``str`` and
``repr`` leave it out, and nothing logs it.
"""

from __future__ import annotations

from django.db import models

from timers.models import Tenant


class SlackWorkspace(models.Model):
    team_id = models.CharField(primary_key=True, max_length=32, help_text="Slack's team id, e.g. T0123ABCD")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="slack_workspaces")
    name = models.CharField(max_length=200, blank=True)
    bot_token = models.CharField(max_length=255, help_text="the app's Bot User OAuth Token (xoxb-...)")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "Slack workspace"

    def __str__(self) -> str:
        return f"{self.name or self.team_id} -> {self.tenant_id}"

    def __repr__(self) -> str:
        return f"<SlackWorkspace {self.team_id} tenant={self.tenant_id}>"
