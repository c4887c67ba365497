"""Profiling harness (not collected by default): CPU ms per run and statements per batch of
``runs_execute_batch`` against bench/webhook_receiver.py in its own process.

PROF_N (default 1000) runs, PROF_BATCH (100) per batch; PROF_PROFILE=path writes pyinstrument
HTML / text of the batches."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from actions.batch import runs_execute_batch
from actions.models import ActionRun, RunStatus
from tests.actions.support import webhook
from tests.factories import make_timer
from timers import services
from timers.models import Tenant, Timer, TimerStatus

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db(transaction=True)
def test_profile_batches(tenant: Tenant, settings: Any, tmp_path: Path) -> None:
    settings.MINOOTS_WEBHOOK_ALLOW_PRIVATE = True
    n = int(os.environ.get("PROF_N", "1000"))
    size = int(os.environ.get("PROF_BATCH", "100"))
    port_file = tmp_path / "port"
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "webhook_receiver.py"), str(port_file), "/dev/null"])
    try:
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text()}/hook"
        for i in range(n):
            make_timer(
                tenant=tenant,
                name=f"p{i}",
                actions=[webhook("hook", url)],
                retry_policy={"maxAttempts": 3, "backoffInitialMs": 10, "backoffMultiplier": 2},
            )
        while services.timers_fire(limit=1000):
            pass
        ids = list(
            ActionRun.objects.filter(status=RunStatus.PENDING)
            .order_by("timer", "position")
            .values_list("pk", flat=True)
        )
        assert len(ids) == n
        batches = [ids[i : i + size] for i in range(0, n, size)]
        runs_execute_batch(run_ids=batches[0])  # warm: connections, caches
        profile = os.environ.get("PROF_PROFILE")
        profiler = None
        if profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005)
            profiler.start()
        cprofile = None
        if os.environ.get("PROF_CPROFILE"):
            import cProfile

            cprofile = cProfile.Profile()
            cprofile.enable()
        cpu0, wall0, main0 = time.process_time(), time.monotonic(), time.thread_time()
        statements = []
        for batch in batches[1:]:
            with CaptureQueriesContext(connection) as ctx:
                runs_execute_batch(run_ids=batch)
            statements.append(len(ctx.captured_queries))
            last = ctx.captured_queries
        cpu, wall, main = time.process_time() - cpu0, time.monotonic() - wall0, time.thread_time() - main0
        if cprofile is not None:
            import pstats

            cprofile.disable()
            pstats.Stats(cprofile).sort_stats(os.environ["PROF_CPROFILE"]).print_stats(45)
        if profiler is not None and profile:
            profiler.stop()
            Path(profile).write_text(profiler.output_text(unicode=False, color=False, show_all=False))
        ran = n - len(batches[0])
        print(
            f"\nPROF runs={ran} batch={size} cpu_ms_per_run={cpu * 1000 / ran:.3f} "
            f"main_thread_ms_per_run={main * 1000 / ran:.3f} wall_s={wall:.2f} runs_per_s={ran / wall:.0f} statements_per_batch={statements}"
        )
        if os.environ.get("PROF_SQL"):
            for q in last:
                print("SQL", q["sql"][:200].replace("\n", " "))
        assert Timer.objects.filter(status=TimerStatus.SETTLED).count() == n
    finally:
        proc.terminate()
        proc.wait()
