"""Celery shims for the timers queue: take ids, call the engine."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="timers.fire_due", ignore_result=True)
def fire_due(bucket: int | None = None) -> int:
    from timers import engine

    return engine.fire_due(bucket=bucket)


@shared_task(name="timers.reconcile", ignore_result=True)
def reconcile() -> dict[str, object]:
    from timers import engine

    return engine.reconcile().as_dict()
