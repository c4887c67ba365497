"""Celery shims for the actions queue: take ids, call a service.

The task names are registered in ``timers.publishing``, which is how services publish them.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task, signals
from django.db import InterfaceError, OperationalError

from actions.batch import runs_execute_batch
from actions.execution import run_execute
from actions.holders import runs_mark_held
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


@signals.task_received.connect
def mark_runs_held(sender: Any = None, request: Any = None, **_: Any) -> None:
    """A worker took a message for action runs: mark them held by it (``actions.holders``), so
    that should it die, the reconciler recovers them in seconds, not after their lease.
    ``sender`` is the worker's consumer; this runs on its thread, for every task it receives."""
    if request is None or request.name not in (RUN_ACTION, RUN_ACTIONS):
        return
    args = request.args or []
    if not args:
        return
    run_ids = [args[0]] if request.name == RUN_ACTION else list(args[0] or [])
    runs_mark_held(run_ids=[str(r) for r in run_ids], consumer=sender)
