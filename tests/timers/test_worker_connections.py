"""A worker keeps its database connections from task to task (CONN_MAX_AGE), as Django keeps
them from request to request: Celery's Django fixup alone closes them around every task, so
every tick and every action attempt paid a new Postgres connection before its first query."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis
from django.db import connection
from django.utils import timezone

from tests.processes import Processes, wait_for
from timers import services
from timers.models import Tenant, Timer, TimerStatus
from timers.services import TimerSpec

# Counted with Postgres's own session statistics; SQLite has no sessions to count.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e, pytest.mark.once_on_postgres]


def sessions_opened() -> int:
    """Sessions ever established to the test database (Postgres's cumulative statistics, which
    a backend reports within about a second)."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        (sessions,) = cur.fetchone()
    return int(sessions)


def test_a_worker_reuses_its_database_connections_across_ticks(
    tenant: Tenant, broker: redis.Redis, processes: Processes
) -> None:
    processes.worker(queues="timers", concurrency=2)
    time.sleep(1.5)  # the worker's start-up connections are reported
    before = sessions_opened()
    start = timezone.now() + timedelta(seconds=1)
    timers = [
        services.timer_create(
            tenant=tenant, spec=TimerSpec(name=f"t{i}", fire_at=start + timedelta(milliseconds=150 * i))
        )[0]
        for i in range(12)
    ]

    wait_for(
        lambda: Timer.objects.filter(pk__in=[t.pk for t in timers], status=TimerStatus.SETTLED).count() == 12,
        timeout=20,
        what="the 12 timers to settle, each by its own tick",
    )
    time.sleep(1.5)
    # Twelve ticks, each its own task: at most one connection per worker thread (and the
    # worker's other threads), not one per task.
    assert sessions_opened() - before <= 4
