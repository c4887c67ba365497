from __future__ import annotations

from django.apps import AppConfig


class ActionsConfig(AppConfig):
    name = "actions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Importing the runner modules registers each kind.
        from actions.runners import load_runners

        load_runners()
