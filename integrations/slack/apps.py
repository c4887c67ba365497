from __future__ import annotations

from django.apps import AppConfig


class SlackConfig(AppConfig):
    name = "integrations.slack"
    label = "slack"
    verbose_name = "Slack"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Give the ``slack`` action kind its bot tokens (actions never imports this app)."""
        from actions.runners import slack as slack_runner
        from integrations.slack import selectors

        slack_runner.register_token_lookup(selectors.workspace_bot_token)
