"""Fault tests: real worker and beat subprocesses on the real broker and database.

Waits are bounded ("eventually, within N seconds"); nothing here asserts how fast.
"""

from __future__ import annotations

import signal
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
import redis
import requests
from django.utils import timezone

from tests.concurrency import run_in_threads
from tests.factories import schedule_timers
from tests.processes import Processes, wait_for
from timers import services, ticks
from timers.models import Tenant, Timer, TimerEvent, TimerStatus
from timers.services import Conflict
from timers.tasks import fire_due

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def fired_counts() -> Counter[Any]:
    return Counter(TimerEvent.objects.filter(kind="fired").values_list("timer_id", flat=True))


def all_settled(timers: list[Timer]) -> bool:
    return Timer.objects.filter(pk__in=[t.pk for t in timers], status=TimerStatus.SETTLED).count() == len(timers)


def assert_each_fired_once(timers: list[Timer]) -> None:
    counts = fired_counts()
    assert {t.pk: counts[t.pk] for t in timers} == {t.pk: 1 for t in timers}


def assert_all_settle_firing_once(timers: list[Timer], *, timeout: float, what: str) -> None:
    wait_for(lambda: all_settled(timers), timeout=timeout, what=what)
    assert_each_fired_once(timers)


def test_timers_fire_once_after_redis_loses_every_message(
    tenant: Tenant, broker: redis.Redis, processes: Processes
) -> None:
    timers = schedule_timers(tenant=tenant, count=30, in_=timedelta(seconds=4))
    assert broker.llen("timers") >= 1
    broker.flushdb()  # messages and tick markers gone, as after a Redis restart without persistence

    processes.wait_ready(processes.worker(wait=False), processes.beat(wait=False))

    assert_all_settle_firing_once(timers, timeout=40, what="every timer to settle after the flush")


def test_worker_killed_during_a_burst_loses_no_timer_and_fires_none_twice(
    tenant: Tenant, broker: redis.Redis, processes: Processes
) -> None:
    timers = schedule_timers(tenant=tenant, count=1500, in_=timedelta(seconds=3))
    worker = processes.worker("doomed")

    wait_for(lambda: TimerEvent.objects.filter(kind="fired").exists(), timeout=30, what="the burst to start")
    worker.signal_group(signal.SIGKILL)
    worker.popen.wait(10)

    processes.wait_ready(processes.worker("survivor", wait=False), processes.beat(wait=False))
    assert_all_settle_firing_once(timers, timeout=60, what="every timer to settle after the kill")


def test_two_beats_never_fire_a_timer_twice(
    tenant: Tenant, broker: redis.Redis, processes: Processes, settings: Any
) -> None:
    settings.MINOOTS_ARM_HORIZON = timedelta(seconds=1)
    env = {"MINOOTS_ARM_HORIZON": "2s"}
    processes.env.update(env)
    timers = schedule_timers(tenant=tenant, count=40, in_=timedelta(seconds=5))
    assert Timer.objects.filter(status=TimerStatus.SCHEDULED).count() == 40  # left to the reconcilers

    processes.wait_ready(
        processes.worker(wait=False), processes.beat("beat-a", wait=False), processes.beat("beat-b", wait=False)
    )

    assert_all_settle_firing_once(timers, timeout=40, what="every timer to settle")
    armed = Counter(TimerEvent.objects.filter(kind="armed").values_list("timer_id", flat=True))
    assert set(armed.values()) == {1}


def test_timers_overdue_while_beat_was_stopped_fire_once_when_it_returns(
    tenant: Tenant, broker: redis.Redis, processes: Processes, settings: Any
) -> None:
    settings.MINOOTS_ARM_HORIZON = timedelta(seconds=1)
    processes.env.update({"MINOOTS_ARM_HORIZON": "1s"})
    timers = schedule_timers(tenant=tenant, count=10, in_=timedelta(seconds=2))
    processes.worker()

    wait_for(lambda: timezone.now() > timers[0].fire_at + timedelta(seconds=2), timeout=10, what="fireAt to pass")
    assert Timer.objects.filter(status=TimerStatus.SCHEDULED).count() == 10  # nobody armed them

    processes.beat()
    assert_all_settle_firing_once(timers, timeout=30, what="overdue timers to fire")
    # Missed-run policy: they fire as soon as possible, with their true lateness recorded.
    assert all((t.lateness_ms or 0) >= 2000 for t in Timer.objects.filter(pk__in=[t.pk for t in timers]))


def test_duplicate_and_early_ticks_fire_a_timer_once(tenant: Tenant, broker: redis.Redis, processes: Processes) -> None:
    timers = schedule_timers(tenant=tenant, count=5, in_=timedelta(seconds=3))
    bucket = ticks.bucket_of(timers[0].fire_at)
    for _ in range(3):  # duplicates of the real tick
        fire_due.apply_async(kwargs={"bucket": bucket}, eta=timers[0].fire_at)
    fire_due.apply_async(kwargs={"bucket": bucket})  # arrives early: nothing is due yet

    processes.worker()
    assert_all_settle_firing_once(timers, timeout=30, what="timers to settle")


def test_cancels_racing_the_claim_either_win_or_get_a_conflict(
    tenant: Tenant, broker: redis.Redis, processes: Processes
) -> None:
    timers = schedule_timers(tenant=tenant, count=60, in_=timedelta(seconds=3))
    processes.worker()
    # What each cancel call told its caller: the status it returned, or "conflict".
    answers: dict[Any, str] = {}

    def cancel_around_fire_time() -> None:
        wait_for(lambda: timezone.now() >= timers[0].fire_at - timedelta(milliseconds=20), timeout=10)
        for t in timers:
            try:
                answers[t.pk] = services.timer_cancel(timer=Timer.objects.get(pk=t.pk), reason="race", by="test").status
            except Conflict:
                answers[t.pk] = "conflict"

    run_in_threads(cancel_around_fire_time, timeout=30)

    wait_for(lambda: not Timer.objects.filter(status__in=["armed", "fired"]).exists(), timeout=30, what="quiescence")
    counts = fired_counts()
    assert set(answers) == {t.pk for t in timers}
    for t in Timer.objects.filter(pk__in=[t.pk for t in timers]):
        if t.status == TimerStatus.CANCELLED:
            # The cancel won: its caller was told so, and the timer never fired.
            assert (answers[t.pk], counts[t.pk]) == (TimerStatus.CANCELLED, 0)
        else:
            # The claim won: the timer fired once, and the cancel was refused while it was fired
            # (409) or returned it settled and unchanged; it was never reported as cancelled.
            assert t.status == TimerStatus.SETTLED and counts[t.pk] == 1
            assert answers[t.pk] in ("conflict", TimerStatus.SETTLED)
            assert t.cancelled_at is None


def test_timer_created_over_http_moves_to_settled_with_its_lateness(
    tenant: Tenant, broker: redis.Redis, processes: Processes
) -> None:
    base, headers = processes.stack(tenant)

    created = requests.post(f"{base}/api/timers", json={"name": "e2e", "duration": "2s"}, headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    timer_id = created.json()["id"]
    assert created.json()["status"] == "armed"

    def settled() -> dict[str, Any] | None:
        body = requests.get(f"{base}/api/timers/{timer_id}", headers=headers, timeout=10).json()
        return body if body["status"] == "settled" else None

    body = wait_for(settled, timeout=30, what="the timer to settle")
    assert body["latenessMs"] is not None and body["latenessMs"] >= 0
    assert body["firedAt"] is not None
    kinds = [
        e["kind"]
        for e in requests.get(f"{base}/api/timers/{timer_id}/events", headers=headers, timeout=10).json()["events"]
    ]
    assert kinds == ["created", "armed", "fired", "settled"]
