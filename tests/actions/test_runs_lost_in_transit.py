"""A run whose message was lost with a worker that died taking it is published again in seconds.

kombu's BRPOP takes a message out of the queue as Redis sends it; the worker stores it in the
unacked set and marks its runs held (``actions.holders``) only once it has read it. A worker
SIGKILLed in between leaves the run published (its marker set), marked by nobody and in no
queue: before, nothing recovered it until its marker expired with the lease (5 minutes).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from django.core.cache import cache

from actions import holders, services
from actions.models import ActionRun, RunStatus
from tests.actions.conftest import FireTimer
from tests.actions.support import queued_runs, webhook

pytestmark = pytest.mark.django_db


def overdue_webhook_run(fire_timer: FireTimer, settings: Any) -> tuple[ActionRun, datetime]:
    """A fired timer's pending webhook run, and an instant at which it is overdue past the
    repair grace (when the reconciler looks for lost runs)."""
    timer = fire_timer(webhook("a", "https://example.com/hook"))
    run = ActionRun.objects.get(timer=timer)
    assert run.status == RunStatus.PENDING and run.next_attempt_at is not None
    return run, run.next_attempt_at + settings.MINOOTS_REPAIR_GRACE + timedelta(seconds=1)


def later_by(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The holders' clock (what DEAD_AFTER_SECONDS is measured with) ``seconds`` ahead."""
    real = time.time
    monkeypatch.setattr(holders, "time", SimpleNamespace(time=lambda: real() + seconds))


def test_a_published_run_in_no_queue_and_held_by_no_worker_is_published_again_once(
    fire_timer: FireTimer,
    broker: redis.Redis,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    run, now = overdue_webhook_run(fire_timer, settings)
    # Published (the marker runs_publish_batches sets), then taken off the queue by a worker
    # that died before it stored or marked it: the queue is empty, no holder mark.
    cache.set(f"run:{run.pk}", 1, timeout=300)
    assert queued_runs(broker) == []

    # Missing at one look only: a live worker may be between taking and marking it.
    assert services.runs_recover(now=now, limit=100) == 0
    assert queued_runs(broker) == []

    later_by(monkeypatch, holders.DEAD_AFTER_SECONDS + 0.1)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.runs_recover(now=now, limit=100) == 1
    assert [r for r, _ in queued_runs(broker)] == [str(run.pk)]

    # Once per lease: its new message is queued, and even once taken it is not published again.
    later_by(monkeypatch, 2 * holders.DEAD_AFTER_SECONDS + 0.2)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.runs_recover(now=now, limit=100) == 0
    broker.delete("actions")
    later_by(monkeypatch, 3 * holders.DEAD_AFTER_SECONDS + 0.3)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.runs_recover(now=now, limit=100) == 0
    assert queued_runs(broker) == []


def test_a_published_run_still_waiting_in_the_queue_is_left_to_its_message(
    fire_timer: FireTimer,
    broker: redis.Redis,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    run, now = overdue_webhook_run(fire_timer, settings)
    assert services.runs_publish_batches([run.pk]) == 1  # queued behind busy workers, say

    for ahead in (0.0, holders.DEAD_AFTER_SECONDS + 0.1, 2 * holders.DEAD_AFTER_SECONDS + 0.2):
        later_by(monkeypatch, ahead)
        with django_capture_on_commit_callbacks(execute=True):
            assert services.runs_recover(now=now, limit=100) == 0
    assert len(broker.lrange("actions", 0, -1)) == 1  # its one message, not published again


def test_a_queue_too_long_to_read_leaves_unmarked_runs_to_their_lease(
    fire_timer: FireTimer, broker: redis.Redis, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, now = overdue_webhook_run(fire_timer, settings)
    cache.set(f"run:{run.pk}", 1, timeout=300)
    broker.lpush("actions", *[b"{}"] * 3)  # more than the limit below: cannot tell
    monkeypatch.setattr(holders, "QUEUE_SCAN_LIMIT", 2)

    for ahead in (0.0, holders.DEAD_AFTER_SECONDS + 0.1):
        later_by(monkeypatch, ahead)
        assert services.runs_recover(now=now, limit=100) == 0
