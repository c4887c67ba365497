"""An action worker is SIGKILLed with webhooks in flight and more messages prefetched (issue 10
item 2).

Before, its running runs waited out their 5-minute lease, and the messages it had prefetched
sat in Redis's unacked set for the visibility timeout while their publish markers kept the
reconciler away. Now the worker's heartbeat stops, the reconciler recovers both within seconds
(``actions.holders``), and only the attempts that were really in flight are sent again.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
from django.utils import timezone

from minoots_project.runall import commands
from tests.processes import Processes, wait_for
from timers.models import Tenant, Timer, TimerStatus
from timers.services import TimerSpec, timer_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

TIMERS = 12
ANSWER_AFTER = 2.0  # seconds the receiver takes: long enough to kill the worker mid-delivery


class SlowReceiver:
    """Answers every webhook 200 after ANSWER_AFTER s, or at once after ``quick`` is set (the
    slowness is only there to have deliveries in flight when the worker dies; the survivor's
    need not wait it out); records each delivery's webhook-id."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.in_flight = 0
        self.quick = threading.Event()
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    outer.ids.append(self.headers["webhook-id"])
                    outer.in_flight += 1
                try:
                    outer.quick.wait(ANSWER_AFTER)
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                finally:
                    with lock:
                        outer.in_flight -= 1

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[SlowReceiver]:
    r = SlowReceiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.mark.parametrize("redis_lost", [False, True], ids=["worker-killed", "worker-killed-and-redis-flushed"])
def test_runs_of_a_killed_action_worker_are_recovered_in_seconds_and_only_in_flight_attempts_repeat(
    tenant: Tenant, processes: Processes, receiver: SlowReceiver, broker: redis.Redis, redis_lost: bool
) -> None:
    """``redis_lost``: Redis loses everything too (a whole machine restarted): the runs' marks
    are gone, and the worker recorded in the database (``ActionRun.worker``) is what tells."""
    processes.env["MINOOTS_WEBHOOK_ALLOW_PRIVATE"] = "true"
    argv = commands(python=sys.executable, data_dir=processes.workdir, log_level="INFO", concurrency=2)
    firing = processes.start("firing", argv["firing"], ready=" ready.", wait=False)
    doomed = processes.start("actions-doomed", argv["worker"], ready=" ready.", wait=False)
    beat_argv = [*argv["beat"][:-1], str(processes.workdir / "beat-schedule")]
    processes.wait_ready(firing, doomed, processes.start("beat", beat_argv, ready="beat: Starting", wait=False))

    # One timer per tick, so one run_actions message each: 2 run at once in the worker's two
    # threads, the next ones wait prefetched in it.
    first = timezone.now() + timedelta(seconds=2)
    bundle = {"actions": [{"id": "hook", "kind": "webhook", "parameters": {"url": receiver.url, "timeoutMs": 10_000}}]}
    timers = [
        timer_create(
            tenant=tenant,
            spec=TimerSpec(name=f"w{i}", fire_at=first + timedelta(milliseconds=120 * i), action_bundle=bundle),
        )[0]
        for i in range(TIMERS)
    ]

    wait_for(lambda: receiver.in_flight == 2, timeout=20, what="two webhooks in flight")
    time.sleep(0.3)  # every timer has fired by now: its message is in the doomed worker
    in_flight_ids = set(receiver.ids)
    doomed.signal_group(signal.SIGKILL)
    doomed.popen.wait(10)
    receiver.quick.set()
    if redis_lost:
        broker.flushdb()
    killed_at = time.monotonic()
    processes.start("actions", argv["worker"], ready=" ready.")

    def all_settled() -> bool:
        ids = [t.pk for t in timers]
        return Timer.objects.filter(pk__in=ids, status=TimerStatus.SETTLED).count() == len(ids)

    # The lease is 5 minutes: recovered in seconds means it was not the lease.
    wait_for(all_settled, timeout=40, what="every timer to settle after the kill")
    recovered_in = time.monotonic() - killed_at
    sent = Counter(receiver.ids)
    repeated = {webhook_id for webhook_id, n in sent.items() if n > 1}
    assert len(sent) == TIMERS
    assert repeated <= in_flight_ids, (repeated, in_flight_ids)  # only what was really in flight
    assert max(sent.values()) <= 2
    sys.stderr.write(f"recovered in {recovered_in:.1f} s; {len(repeated)} in-flight webhook(s) sent again\n")
