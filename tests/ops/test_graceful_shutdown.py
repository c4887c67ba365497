"""A worker stopped with SIGTERM finishes its running task and hands back the rest (acks-late)."""

from __future__ import annotations

import re
import signal
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from tests.factories import schedule_timers
from tests.ops.slowtask import sleep_then_write
from tests.processes import Processes, wait_for
from timers.models import Tenant, Timer, TimerEvent, TimerStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def test_sigterm_finishes_the_running_task_and_hands_back_the_held_ticks(
    tenant: Tenant, broker: redis.Redis, processes: Processes, tmp_path: Path
) -> None:
    timers = schedule_timers(tenant=tenant, in_=timedelta(seconds=9), count=20, name_prefix="g")
    marker = tmp_path / "slow"
    sleep_then_write.apply_async(args=(str(marker), 2.0), queue="timers")

    first = processes.worker("first", extra=["--include", "tests.ops.slowtask"])
    wait_for(lambda: Path(f"{marker}.started").exists(), timeout=15, what="the slow task to start")
    wait_for(
        lambda: re.search(r"timers\.fire_due\[[^]]+\] received", first.log()),
        timeout=15,
        what="the first worker to hold the ETA tick",
    )
    assert broker.hlen("unacked") >= 2  # the running task and the tick it keeps for later

    first.signal_group(signal.SIGTERM)
    first.popen.wait(30)
    assert first.popen.returncode == 0, first.log()[-3000:]
    assert marker.read_text() == "done"  # the running task was finished, not abandoned
    assert not TimerEvent.objects.filter(kind="fired").exists()
    assert broker.llen("timers") >= 1  # the tick it held went back to the queue

    # No beat runs here: only the handed-back tick can fire the timers.
    processes.worker("second")
    wait_for(
        lambda: Timer.objects.filter(pk__in=[t.pk for t in timers], status=TimerStatus.SETTLED).count() == len(timers),
        timeout=30,
        what="every timer to settle from the handed-back tick",
    )
    fired = list(TimerEvent.objects.filter(kind="fired").values_list("timer_id", flat=True))
    assert sorted(fired) == sorted(t.pk for t in timers)  # each exactly once
