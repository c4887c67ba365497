"""Redis vanishes while the firing worker holds ETA ticks, and comes back empty.

A private redis-server (tests/ops/redis_server.py) plays the broker of a firing worker and a
beat started with the command lines ``make run`` uses. Waits are bounded ("eventually, within N
seconds"); nothing here asserts how fast beyond that bound.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from minoots_project.runall import commands
from tests.ops.redis_server import RedisServer, private_redis  # noqa: F401  (fixture)
from tests.processes import Proc, Processes, wait_for
from timers.models import Tenant, Timer, TimerEvent, TimerStatus
from timers.services import TimerSpec, timer_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

# Seconds after Redis is back within which every timer must have fired: the reconciler runs every
# second here (tests/processes.py) and the worker reconnects with kombu's retry; the rest is slack
# for a loaded 2-core machine.
BACK_WITHIN = 20.0


def start_firing_worker_and_beat(processes: Processes, redis_url: str) -> tuple[Proc, Proc]:
    """The firing worker and beat of ``make run`` (runall's command lines) on ``redis_url``."""
    processes.env.update({"CELERY_BROKER_URL": redis_url, "MINOOTS_ARM_HORIZON": "60s"})
    argv = commands(python=sys.executable, data_dir=processes.workdir, log_level="INFO", concurrency=4)
    worker = processes.start("firing", argv["firing"], ready=" ready.", wait=False)
    beat_argv = [*argv["beat"][:-1], str(processes.workdir / "beat-schedule")]
    beat = processes.start("beat", beat_argv, ready="beat: Starting", wait=False)
    processes.wait_ready(worker, beat)
    return worker, beat


def settled_count(timers: list[Timer]) -> int:
    return Timer.objects.filter(pk__in=[t.pk for t in timers], status=TimerStatus.SETTLED).count()


def fired_counts(timers: list[Timer]) -> dict[Any, int]:
    counts = Counter(TimerEvent.objects.filter(kind="fired").values_list("timer_id", flat=True))
    return {t.pk: counts[t.pk] for t in timers}


def kill_9(server: RedisServer) -> None:
    server.kill()


def shutdown_nosave(server: RedisServer) -> None:
    server.shutdown_nosave()


# The two cases differ only in how Redis goes away (the worker's side of it is its broker
# channel: kombu and minoots_project/redis_transport.py); the database side of the recovery
# (the reconciler re-publishing the ticks, each timer's claim and fire) is the same in both, and
# the SIGKILL case runs it on both databases. So the second case runs once, on Postgres.
@pytest.mark.parametrize(
    "stop_redis",
    [
        pytest.param(kill_9, id="SIGKILL"),
        pytest.param(
            shutdown_nosave,
            id="SHUTDOWN-NOSAVE",
            marks=pytest.mark.once_on_postgres(
                reason="how Redis goes away concerns only the broker connection; the SIGKILL case covers "
                "the database side on both databases"
            ),
        ),
    ],
)
def test_worker_holding_eta_ticks_survives_redis_loss_and_fires_each_timer_once_when_redis_returns(
    tenant: Tenant,
    private_redis: RedisServer,  # noqa: F811
    processes: Processes,
    settings: Any,
    stop_redis: Callable[[RedisServer], None],
) -> None:
    worker, beat = start_firing_worker_and_beat(processes, private_redis.url)
    # Created here as `scheduled` (a 1 s horizon in this process, which publishes nothing to the
    # private Redis); the worker's reconciler arms them and publishes their ticks there.
    settings.MINOOTS_ARM_HORIZON = timedelta(seconds=1)
    fire_at = timezone.now() + timedelta(seconds=5)
    timers = [timer_create(tenant=tenant, spec=TimerSpec(name=f"r{i}", fire_at=fire_at))[0] for i in range(20)]

    def worker_holds_the_ticks() -> bool:
        armed = Timer.objects.filter(pk__in=[t.pk for t in timers], status=TimerStatus.ARMED).count()
        with private_redis.client() as r:
            held = int(r.hlen("unacked"))
        return armed == len(timers) and held >= 1 and "timers.fire_due[" in worker.log()

    wait_for(worker_holds_the_ticks, timeout=15, what="the worker to hold the armed timers' ETA ticks")
    assert timezone.now() < fire_at, "the machine was too slow: the ticks were due before Redis went away"

    stop_redis(private_redis)
    # Redis stays away until the timers are overdue: only a tick published after it returns fires them.
    while timezone.now() < fire_at + timedelta(seconds=2):
        time.sleep(0.1)
    assert settled_count(timers) == 0
    private_redis.start()
    back = time.monotonic()

    wait_for(
        lambda: settled_count(timers) == len(timers) or not worker.alive(),
        timeout=BACK_WITHIN,
        what=f"every timer to settle within {BACK_WITHIN:g}s of Redis returning",
    )
    assert worker.alive(), f"the firing worker exited with {worker.popen.returncode}:\n{worker.log()[-4000:]}"
    assert settled_count(timers) == len(timers)
    recovered_in = time.monotonic() - back
    time.sleep(2)  # a late duplicate tick would fire now: there must be nothing left to fire
    assert fired_counts(timers) == {t.pk: 1 for t in timers}
    assert worker.alive() and beat.alive()
    assert "Unrecoverable error" not in worker.log()
    sys.stderr.write(f"timers fired {recovered_in:.1f}s after Redis returned\n")
