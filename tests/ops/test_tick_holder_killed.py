"""A firing worker is SIGKILLed while it holds the ETA ticks of timers due a few seconds later.

The ticks it took stay in Redis's unacked set until ``visibility_timeout`` (6 h) and their bucket
markers survive; a new firing worker starts (as ``make run`` restarts a dead child) beside beat,
reconciling every second. Each timer must fire on time, once: neither the visibility timeout
nor the overdue repair (whose grace is made too long here to be what fires them) may be what
saves it. Waits are bounded; the one bound on lateness is the reconcile interval plus slack.
"""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from django.utils import timezone

from minoots_project.runall import commands
from tests.processes import Processes, wait_for
from timers import ticks
from timers.models import Tenant, Timer, TimerEvent, TimerStatus
from timers.reconciler_status import reconcile_pass_last
from timers.services import TimerSpec, timer_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

# With this grace the overdue repair fires a timer whose tick is lost 20 s late at the earliest.
REPAIR_GRACE = "20s"
# The reconciler runs every second (tests/processes.py); a worker counts as dead within
# ticks.HOLDER_TTL_SECONDS, and the timers are due after that: "about a reconcile interval".
ON_TIME_MS = 2000
TIMERS = 20


def test_ticks_held_by_a_killed_firing_worker_are_republished_and_each_timer_fires_on_time_once(
    tenant: Tenant, broker: redis.Redis, processes: Processes
) -> None:
    processes.env["MINOOTS_REPAIR_GRACE"] = REPAIR_GRACE
    argv = commands(python=sys.executable, data_dir=processes.workdir, log_level="INFO", concurrency=4)
    doomed = processes.start("firing-doomed", argv["firing"], ready=" ready.", wait=False)
    beat_argv = [*argv["beat"][:-1], str(processes.workdir / "beat-schedule")]
    processes.wait_ready(doomed, processes.start("beat", beat_argv, ready="beat: Starting", wait=False))

    # Armed at creation, their ticks published here and taken by the only firing worker.
    first = timezone.now() + timedelta(seconds=5)
    timers = [
        timer_create(tenant=tenant, spec=TimerSpec(name=f"k{i}", fire_at=first + timedelta(milliseconds=150 * i)))[0]
        for i in range(TIMERS)
    ]
    buckets = {ticks.bucket_of(t.fire_at) for t in timers}

    def doomed_holds_every_tick() -> bool:
        return int(broker.hlen("unacked")) >= len(buckets) and int(broker.llen("timers")) == 0

    wait_for(doomed_holds_every_tick, timeout=10, what="the firing worker to hold every ETA tick")
    assert timezone.now() < first - timedelta(seconds=3), "the machine was too slow: the ticks were nearly due"

    doomed.signal_group(signal.SIGKILL)
    doomed.popen.wait(10)
    processes.start("firing", argv["firing"], ready=" ready.")

    def all_ended() -> bool:
        done = Timer.objects.filter(pk__in=[t.pk for t in timers], status=TimerStatus.SETTLED).count()
        return done == len(timers)

    wait_for(all_ended, timeout=45, what="every timer to fire after the kill")
    time.sleep(2)  # a late duplicate tick would fire now: there must be nothing left to fire

    fired = Counter(TimerEvent.objects.filter(kind="fired").values_list("timer_id", flat=True))
    assert {t.pk: fired[t.pk] for t in timers} == {t.pk: 1 for t in timers}
    lateness: dict[str, Any] = dict(
        Timer.objects.filter(pk__in=[t.pk for t in timers]).order_by("fire_at").values_list("name", "lateness_ms")
    )
    assert all(ms is not None and ms <= ON_TIME_MS for ms in lateness.values()), lateness
    sys.stderr.write(f"lateness after the kill: max {max(lateness.values())} ms\n")


def test_a_live_firing_worker_holding_ticks_gets_no_duplicate_ticks_from_the_reconciler(
    tenant: Tenant, broker: redis.Redis, processes: Processes
) -> None:
    """The steady path stays one tick per bucket: the worker marks each tick it takes as held
    and keeps its heartbeat, so passes every second while it holds them re-publish nothing."""
    argv = commands(python=sys.executable, data_dir=processes.workdir, log_level="INFO", concurrency=4)
    worker = processes.start("firing", argv["firing"], ready=" ready.", wait=False)
    beat_argv = [*argv["beat"][:-1], str(processes.workdir / "beat-schedule")]
    processes.wait_ready(worker, processes.start("beat", beat_argv, ready="beat: Starting", wait=False))
    first = timezone.now() + timedelta(seconds=5)
    timers = [
        timer_create(tenant=tenant, spec=TimerSpec(name=f"s{i}", fire_at=first + timedelta(milliseconds=150 * i)))[0]
        for i in range(TIMERS)
    ]

    def all_ended() -> bool:
        done = Timer.objects.filter(pk__in=[t.pk for t in timers], status=TimerStatus.SETTLED).count()
        return done == len(timers)

    wait_for(all_ended, timeout=30, what="every timer to fire")
    log = worker.log()
    # (A pass that reads a bucket's timers just before its tick claims them may still publish one
    # duplicate for it, as it always did: the marker is gone by then. That one is not "lost".)
    assert "tick(s) lost with their worker or never published" not in log, log[-4000:]
    last_pass, _ = reconcile_pass_last()
    assert last_pass is not None and datetime.fromisoformat(last_pass["at"]) > first, "no pass ran meanwhile"
