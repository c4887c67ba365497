"""Celery shims for the timers queue: take ids, call the engine.

The task names are registered in ``timers.publishing``, which is how services publish them.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task, signals

from timers import engine, ticks
from timers.publishing import FIRE_DUE, RECONCILE
from timers.reconciler_status import reconcile_pass_record


@shared_task(name=FIRE_DUE, ignore_result=True)
def fire_due(bucket: int | None = None) -> int:
    return engine.fire_due(bucket=bucket)


@shared_task(name=RECONCILE, ignore_result=True)
def reconcile() -> dict[str, object]:
    report = engine.reconcile().as_dict()
    reconcile_pass_record(report=report)  # for the admin dashboard
    return report


@signals.task_received.connect
def mark_tick_held(sender: Any = None, request: Any = None, **_: Any) -> None:
    """A worker took an ETA tick (it holds it until its ETA): say so in the bucket's marker, so
    the reconciler re-publishes it should this worker die (``ticks.tick_held``). ``sender`` is
    the worker's consumer; this runs on its thread, for every task it receives."""
    if request is None or request.name != FIRE_DUE or not request.eta:
        return
    bucket = (request.kwargs or {}).get("bucket")
    if isinstance(bucket, int):
        ticks.tick_held(bucket=bucket, consumer=sender)
