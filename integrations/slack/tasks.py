"""Celery shims for Slack follow-ups, on the actions queue (CELERY_TASK_ROUTES "integrations.*")."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from actions.errors import ActionError
from integrations.slack import services

log = logging.getLogger(__name__)

MAX_RETRIES = 5


@shared_task(name=services.UPDATE_MESSAGE, bind=True, ignore_result=True, max_retries=MAX_RETRIES)
def update_message(self: Task[..., Any], /, **update: Any) -> None:
    """Replace a fired message after a button; a transient failure is retried (Retry-After)."""
    try:
        services.message_update(**update)
    except ActionError as exc:
        if exc.permanent or self.request.retries >= MAX_RETRIES:
            log.warning("Slack message update failed: %s", exc)
            return
        raise self.retry(countdown=exc.retry_after or 2 ** (self.request.retries + 1)) from exc
