"""Celery shims for the timers queue: take ids, call the engine.

The task names are registered in ``timers.publishing``, which is how services publish them.
"""

from __future__ import annotations

from celery import shared_task

from timers import engine
from timers.publishing import FIRE_DUE, RECONCILE


@shared_task(name=FIRE_DUE, ignore_result=True)
def fire_due(bucket: int | None = None) -> int:
    return engine.fire_due(bucket=bucket)


@shared_task(name=RECONCILE, ignore_result=True)
def reconcile() -> dict[str, object]:
    return engine.reconcile().as_dict()
