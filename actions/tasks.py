"""Celery shims for the actions queue: take ids, call a service."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError

# A database outage before the claim would otherwise leave the run to the reconciler (after
# its publish marker expires); retrying is safe because the claim makes execution idempotent.
RETRY_ON_DATABASE_OUTAGE: dict[str, Any] = {
    "ignore_result": True,
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "max_retries": 5,
}


@shared_task(name="actions.run_action", **RETRY_ON_DATABASE_OUTAGE)
def run_action(run_id: str) -> None:
    from actions.execution import run_execute

    run_execute(run_id=run_id)


@shared_task(name="actions.run_actions", **RETRY_ON_DATABASE_OUTAGE)
def run_actions(run_ids: list[str]) -> None:
    """A chunk of first attempts published together when their timers fired."""
    from actions.batch import runs_execute_batch

    runs_execute_batch(run_ids=run_ids)
