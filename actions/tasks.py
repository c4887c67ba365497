"""Celery shims for the actions queue: take ids, call a service.

The task names are registered in ``timers.publishing``, which is how services publish them.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError

from actions.batch import runs_execute_batch
from actions.execution import run_execute
from timers.publishing import RUN_ACTION, RUN_ACTIONS

# A database outage before the claim would otherwise leave the run to the reconciler (after
# its publish marker expires); retrying is safe because the claim makes execution idempotent.
RETRY_ON_DATABASE_OUTAGE: dict[str, Any] = {
    "ignore_result": True,
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "max_retries": 5,
}


@shared_task(name=RUN_ACTION, **RETRY_ON_DATABASE_OUTAGE)
def run_action(run_id: str) -> None:
    run_execute(run_id=run_id)


@shared_task(name=RUN_ACTIONS, **RETRY_ON_DATABASE_OUTAGE)
def run_actions(run_ids: list[str]) -> None:
    """A chunk of first attempts published together when their timers fired."""
    runs_execute_batch(run_ids=run_ids)
