"""Celery shims for the actions queue: take an id, call a service."""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError


# A database outage before the claim would otherwise leave the run to the reconciler (after
# its publish marker expires); retrying is safe because the claim makes run_execute idempotent.
@shared_task(
    name="actions.run_action",
    ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=5,
)
def run_action(run_id: str) -> None:
    from actions.execution import run_execute

    run_execute(run_id=run_id)


@shared_task(
    name="actions.run_actions",
    ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=5,
)
def run_actions(run_ids: list[str]) -> None:
    from actions.batch import runs_execute_batch

    runs_execute_batch(run_ids=run_ids)
