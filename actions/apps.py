from __future__ import annotations

from django.apps import AppConfig


class ActionsConfig(AppConfig):
    name = "actions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Plug actions into the timers domain's ports (timers never imports actions).

        Runners need no loading here: ``actions.runners.registry`` lists every kind.
        """
        # Imported here, not at module level: models may only be imported once apps are ready.
        from actions import services, transitions
        from timers import ports

        ports.register_fired_handler(services.runs_create_for_fired)
        ports.register_recover_handler(services.runs_recover)
        ports.register_cancelled_handler(transitions.runs_cancel_for_timer)
