"""Celery shims for the actions queue: take an id, call a service."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="actions.run_action", ignore_result=True)
def run_action(run_id: str) -> None:
    from actions.execution import run_execute

    run_execute(run_id=run_id)
