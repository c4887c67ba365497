"""Plain Celery, for comparison: one ETA task per timer, as most projects would do it.

The task records when it ran (minus the timer's intended time) and how often, in Redis.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

BROKER = os.environ.get("BENCH_BASELINE_BROKER", "redis://127.0.0.1:6379/11")

app = Celery("baseline", broker=BROKER)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    enable_utc=True,
    timezone="UTC",
    broker_transport_options={"visibility_timeout": 6 * 3600},
    worker_hijack_root_logger=False,
)
_results = redis.Redis.from_url(BROKER)


def publish_probe(connection: object, timer_id: str, fire_at: float) -> None:
    """Publish to the baseline's own Redis db. (A CELERY_BROKER_URL in the environment, which
    the bench sets for MINOOTS, would override the app's broker; the worker gets its own.)"""
    from datetime import UTC, datetime

    probe.apply_async(args=[timer_id, fire_at], eta=datetime.fromtimestamp(fire_at, UTC), connection=connection)


@app.task(name="baseline.probe")
def probe(timer_id: str, fire_at: float) -> None:
    ran_at = time.time()
    pipe = _results.pipeline()
    pipe.hsetnx("baseline:lateness", timer_id, ran_at - fire_at)
    pipe.hset("baseline:ran_at", timer_id, ran_at)
    pipe.hincrby("baseline:count", timer_id, 1)
    pipe.execute()
