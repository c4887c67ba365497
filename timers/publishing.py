"""Publish Celery tasks by their registered names: the one way services enqueue work.

Services never import task modules (the composition layer): they name the task, and
``CELERY_TASK_ROUTES`` routes it by that name, exactly as ``apply_async`` on the task object
would. The names are a wire contract: messages already queued must still route after a
deploy, so they never change.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from celery import current_app

FIRE_DUE = "timers.fire_due"
RECONCILE = "timers.reconcile"
RUN_ACTION = "actions.run_action"
RUN_ACTIONS = "actions.run_actions"


def publish(
    name: str, *, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None, eta: datetime | None = None
) -> None:
    """Send task ``name``; raises what the broker raises (callers decide what a failure means)."""
    current_app.send_task(name, args=args, kwargs=kwargs, eta=eta)


def publish_each(name: str, calls: Sequence[tuple[dict[str, Any], datetime | None]]) -> None:
    """Send task ``name`` once per ``(kwargs, eta)`` of ``calls``, in one broker round trip where
    the transport batches publishes (kombu's ``Producer.batch``: Redis pipelines the LPUSHes).
    Raises what the broker raises; then none, some or all of them were sent."""
    if not calls:
        return
    app = current_app
    with app.producer_or_acquire() as producer, producer.batch():
        for kwargs, eta in calls:
            app.send_task(name, kwargs=kwargs, eta=eta, producer=producer)
