"""Faults injected into a running MINOOTS, with real processes, and what each does to timers.

Usage (from the repository root, after `make dev-venv`):

    .venv/bin/python bench/faults.py                          # every fault (~15 min when all recover)
    .venv/bin/python bench/faults.py --quick                  # smaller batches, shorter outages
    .venv/bin/python bench/faults.py --faults redis-kill,pg-down
    .venv/bin/python bench/faults.py --ref HEAD               # a clean export of a commit, not the working tree

It starts its own Postgres cluster (initdb into a temporary directory, pg_ctl, a free port,
trust auth) and its own redis-server (a free port, no persistence), migrates, and runs the stack
as ``make run`` does: ``python -m minoots_project.runall`` (web, firing worker, action worker,
beat; it restarts a child that dies, with backoff). The MINOOTS settings are the defaults
(reconcile every 5 s, repair grace 2 s, arm horizon 60 s, action lease 5 min); only
MINOOTS_WEBHOOK_ALLOW_PRIVATE is set, for the local webhook receiver. The shared Postgres and
Redis on 5432 / 6379 are never touched.

Each fault gets a batch of timers (inserted ``scheduled``, as an import would; the reconciler
arms them, as it arms a timer created beyond the horizon), some with a webhook to a local
receiver that records each delivery's ``webhook-id``. The batch falls due during the fault;
the fault is injected; the benchmark waits until every timer ended (settled or failed) or
``--settle`` seconds passed since the system was whole again. Per fault it prints:

- N: timers in the batch; lost: not ended by the end; double-fired: more than one ``fired`` event;
- deliveries: webhook requests received, total / distinct webhook-id; sent twice: webhook-ids
  answered 2xx more than once (a retry after a failure answer is not one);
- lateness: firedAt - fireAt, p50 / p99 / max, seconds;
- recovery: from the moment the system was whole again (the fault over: the kill sent, the
  server back) until the last timer of the batch ended. For the rows without a fault (two
  beats, failing and slow targets) from the batch's last fireAt;
- restarts: children that died and were restarted by the supervisor (nothing is restarted by
  hand, except what the fault itself restarts: Redis, Postgres, the whole machine).

Goal for every row: 0 lost, 0 double-fired, recovery <= 30 s, no process restarted by hand.
Every process started here is killed with its whole process group at the end, on failure, on
Ctrl-C and on SIGTERM too.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fault_support import (  # noqa: E402
    Db,
    PgCluster,
    Receiver,
    RedisServer,
    Stack,
    free_port,
    killpg,
    pid_alive,
)
from bench.timers import insert_scheduled, pct  # noqa: E402

GOAL_RECOVERY_S = 30.0


@dataclass
class Ctx:
    pg: PgCluster
    redis: RedisServer
    stack: Stack
    receiver: Receiver
    db: Db
    api_key: str
    quick: bool
    workdir: Path
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def size(self, full: int) -> int:
        return max(20, full // 4) if self.quick else full

    def api(self) -> str:
        return f"http://127.0.0.1:{self.stack.web_port}"


@dataclass
class Outcome:
    whole_at: float
    notes: list[str] = field(default_factory=list)
    after: Callable[[], None] | None = None  # run once the batch is measured (stop a second beat)


@dataclass
class Fault:
    name: str
    title: str
    inject: Callable[[Ctx, str], Outcome]


Row = dict[str, Any]


# --- helpers --------------------------------------------------------------------------------


def sleep_until(epoch: float) -> None:
    delay = epoch - time.time()
    if delay > 0:
        time.sleep(delay)


def webhook_bundle(url: str, *, attempts: int = 3, timeout_ms: int | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"url": url}
    if timeout_ms is not None:
        params["timeoutMs"] = timeout_ms
    return {
        "actions": [{"id": "notify", "kind": "webhook", "parameters": params}],
        "retryPolicy": {"maxAttempts": attempts, "backoffInitialMs": 1000, "backoffMultiplier": 2},
    }


def add_timers(
    ctx: Ctx, prefix: str, count: int, *, at: float, spread: float, bundle: dict[str, Any] | None = None
) -> None:
    """``count`` scheduled timers named ``prefix<g>``, due from ``at`` (epoch) evenly over ``spread`` s."""
    step_ms = spread * 1000 / max(1, count - 1) if count > 1 else 0.0
    fire_at_sql = f"to_timestamp({at:.3f}) + (g - 1) * interval '{step_ms:.3f} milliseconds'"
    ctx.db.run(lambda cur: insert_scheduled(cur, prefix=prefix, count=count, fire_at_sql=fire_at_sql, bundle=bundle))


def wait_armed(ctx: Ctx, prefix: str, timeout: float = 30) -> bool:
    """Until no timer of the batch is ``scheduled`` (the reconciler armed them, ticks published)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = ctx.db.value(
            "SELECT count(*) FROM timers_timer WHERE name LIKE %s AND status = 'scheduled'", [prefix + "%"]
        )
        if left == 0:
            return True
        time.sleep(0.25)
    return False


class Probe:
    """POST /api/timers twice a second during an outage: what do clients get?"""

    def __init__(self, ctx: Ctx, fault: str) -> None:
        self.ctx = ctx
        self.fault = fault
        self.codes: Counter[str] = Counter()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"probe-{fault}")
        self.thread.start()

    def _run(self) -> None:
        session = requests.Session()
        i = 0
        while not self.stopping.is_set():
            i += 1
            started = time.monotonic()
            try:
                r = session.post(
                    f"{self.ctx.api()}/api/timers",
                    json={"name": f"probe-{self.fault}-{i}", "duration": "1s"},
                    headers={"X-API-Key": self.ctx.api_key},
                    timeout=10,
                )
                code = str(r.status_code)
                if r.status_code == 503 and r.headers.get("Retry-After"):
                    code += " Retry-After"
                elif r.status_code == 201 and time.monotonic() - started > 1:
                    code += " (>1 s)"
            except requests.RequestException as exc:
                code = type(exc).__name__
            self.codes[code] += 1
            self.stopping.wait(0.5)

    def stop(self) -> str:
        self.stopping.set()
        self.thread.join(timeout=15)
        answers = ", ".join(f"{n}× {code}" for code, n in sorted(self.codes.items()))
        return f"creates during the outage: {answers}"


# --- the faults -----------------------------------------------------------------------------


def firing_kill(ctx: Ctx, prefix: str) -> Outcome:
    n = ctx.size(2000)
    at = time.time() + 12
    add_timers(ctx, prefix + "p", n - n // 10, at=at, spread=0)
    add_timers(ctx, prefix + "h", n // 10, at=at, spread=0, bundle=webhook_bundle(ctx.receiver.url("firing-kill")))
    wait_armed(ctx, prefix)
    sleep_until(at)
    # Kill as soon as the claim has begun (the first timer of the batch fired), or 1 s after fireAt.
    fired = 0
    while fired == 0 and time.time() < at + 1:
        fired = ctx.db.value(
            "SELECT count(*) FROM timers_timer WHERE name LIKE %s AND fired_at IS NOT NULL", [prefix + "%"]
        )
        time.sleep(0.005)
    ctx.stack.signal_child("firing", signal.SIGKILL)
    late = time.time() - at
    return Outcome(
        time.time(),
        [
            f"firing worker SIGKILLed {late:.2f} s after a same-instant burst's fireAt, {fired} fired by then (10% with a webhook)"
        ],
    )


def worker_kill(ctx: Ctx, prefix: str) -> Outcome:
    n = ctx.size(1000)
    at = time.time() + 12
    bundle = webhook_bundle(ctx.receiver.url("worker-kill", "slow", "0.2"))
    add_timers(ctx, prefix + "h", n, at=at, spread=1, bundle=bundle)
    wait_armed(ctx, prefix)
    sleep_until(at + 3)
    in_flight = ctx.db.value(
        """SELECT count(*) FROM actions_actionrun r JOIN timers_timer t ON t.id = r.timer_id
            WHERE t.name LIKE %s AND r.status = 'running'""",
        [prefix + "%"],
    )
    ctx.stack.signal_child("worker", signal.SIGKILL)
    return Outcome(
        time.time(),
        [f"action worker SIGKILLed 3 s into delivering webhooks (receiver answers in 0.2 s), {in_flight} runs running"],
    )


def redis_flushall(ctx: Ctx, prefix: str) -> Outcome:
    n = ctx.size(1500)
    at = time.time() + 12
    add_timers(ctx, prefix + "p", n - n // 10, at=at, spread=8)
    add_timers(ctx, prefix + "h", n // 10, at=at, spread=8, bundle=webhook_bundle(ctx.receiver.url("flushall")))
    wait_armed(ctx, prefix)
    sleep_until(at + 3)
    with ctx.redis.client() as r:
        r.flushall()
    return Outcome(time.time(), ["FLUSHALL 3 s into a batch due over 8 s"])


def _redis_outage(ctx: Ctx, prefix: str, fault: str, *, stop: Callable[[], None], empty: bool, what: str) -> Outcome:
    n = ctx.size(1500)
    outage = 5.0 if ctx.quick else 10.0
    at = time.time() + 12
    add_timers(ctx, prefix + "p", n - n // 10, at=at, spread=outage - 2)
    add_timers(ctx, prefix + "h", n // 10, at=at, spread=outage - 2, bundle=webhook_bundle(ctx.receiver.url(fault)))
    wait_armed(ctx, prefix)
    sleep_until(at - 2)
    stop()
    probe = Probe(ctx, fault)
    time.sleep(outage)
    ctx.redis.start(empty=empty)
    whole = time.time()
    return Outcome(whole, [f"{what}, away {outage:g} s while the batch fell due", probe.stop()])


def redis_kill(ctx: Ctx, prefix: str) -> Outcome:
    return _redis_outage(ctx, prefix, "redis-kill", stop=ctx.redis.kill, empty=True, what="SIGKILL, back empty")


def redis_shutdown(ctx: Ctx, prefix: str) -> Outcome:
    return _redis_outage(
        ctx,
        prefix,
        "redis-shutdown",
        stop=lambda: ctx.redis.shutdown(save=True),
        empty=False,
        what="SHUTDOWN SAVE, back with its data",
    )


def pg_restart(ctx: Ctx, prefix: str) -> Outcome:
    n = ctx.size(2000)
    at = time.time() + 12
    add_timers(ctx, prefix + "p", n - n // 10, at=at, spread=0)
    add_timers(ctx, prefix + "h", n // 10, at=at, spread=0, bundle=webhook_bundle(ctx.receiver.url("pg-restart")))
    wait_armed(ctx, prefix)
    sleep_until(at + 0.1)
    started = time.time()
    ctx.pg.restart()
    whole = time.time()
    return Outcome(whole, [f"pg_ctl restart -m fast 0.1 s into a same-instant burst (down {whole - started:.1f} s)"])


def pg_down(ctx: Ctx, prefix: str) -> Outcome:
    n = ctx.size(1500)
    outage = 10.0 if ctx.quick else 20.0
    at = time.time() + 12
    add_timers(ctx, prefix + "p", n - n // 10, at=at, spread=outage - 2)
    add_timers(ctx, prefix + "h", n // 10, at=at, spread=outage - 2, bundle=webhook_bundle(ctx.receiver.url("pg-down")))
    wait_armed(ctx, prefix)
    sleep_until(at - 2)
    ctx.pg.stop("fast")
    probe = Probe(ctx, "pg-down")
    time.sleep(outage)
    ctx.pg.start()
    whole = time.time()
    return Outcome(whole, [f"pg_ctl stop -m fast, down {outage:g} s while the batch fell due", probe.stop()])


def two_beats(ctx: Ctx, prefix: str) -> Outcome:
    from minoots_project.runall import commands

    argv = commands(python=sys.executable, data_dir=ctx.workdir, log_level="INFO", concurrency=16)["beat"]
    argv = [*argv[:-1], str(ctx.workdir / "second-beat-schedule")]
    env = {**ctx.stack.env, "PROMETHEUS_MULTIPROC_DIR": str(Path(ctx.stack.env["MINOOTS_DATA_DIR"]) / "prometheus")}
    with open(ctx.workdir / "second-beat.log", "ab") as out:
        beat = subprocess.Popen(
            argv, cwd=ctx.stack.code, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    ctx.extra.append(beat)
    n = ctx.size(1500)
    spread = 15.0
    at = time.time() + 10
    add_timers(ctx, prefix + "p", n - n // 10, at=at, spread=spread)
    add_timers(ctx, prefix + "h", n // 10, at=at, spread=spread, bundle=webhook_bundle(ctx.receiver.url("two-beats")))

    def stop_beat() -> None:
        killpg(beat.pid, signal.SIGTERM)
        try:
            beat.wait(10)
        except subprocess.TimeoutExpired:
            killpg(beat.pid)
            beat.wait(10)

    return Outcome(
        at + spread, ["a second beat (runall's command line) beside runall's for the whole batch"], after=stop_beat
    )


def beat_down(ctx: Ctx, prefix: str) -> Outcome:
    n = ctx.size(1000)
    outage = 15.0 if ctx.quick else 30.0
    at = time.time() + 12
    add_timers(ctx, prefix + "p", n - n // 10, at=at, spread=outage - 5)
    add_timers(
        ctx, prefix + "h", n // 10, at=at, spread=outage - 5, bundle=webhook_bundle(ctx.receiver.url("beat-down"))
    )
    wait_armed(ctx, prefix)
    sleep_until(at - 3)
    pid = ctx.stack.pids()["beat"]
    # SIGSTOP, not a kill: runall would start a dead beat again within a second.
    killpg(pid, signal.SIGSTOP)
    try:
        time.sleep(outage)
    finally:
        killpg(pid, signal.SIGCONT)
    return Outcome(time.time(), [f"beat frozen (SIGSTOP) {outage:g} s while the armed batch fell due"])


def web_kill(ctx: Ctx, prefix: str) -> Outcome:
    """Clients create timers over HTTP, each request with an Idempotency-Key, and retry with the
    same key on a connection error or 5xx until answered; web is SIGKILLed midway."""
    n = ctx.size(800)
    clients = 8
    acked: dict[int, str] = {}
    retries = Counter[str]()
    lock = threading.Lock()
    todo = list(range(n))
    stop = threading.Event()

    def client() -> None:
        session = requests.Session()
        while not stop.is_set():
            with lock:
                if not todo:
                    return
                i = todo.pop(0)
            body = {"name": f"{prefix}{i}", "duration": "1s"}
            headers = {"X-API-Key": ctx.api_key, "Idempotency-Key": f"{prefix}{i}"}
            while not stop.is_set():
                try:
                    r = session.post(f"{ctx.api()}/api/timers", json=body, headers=headers, timeout=10)
                    if r.status_code < 300:
                        with lock:
                            acked[i] = r.json()["id"]
                        break
                    reason = str(r.status_code)
                except requests.RequestException as exc:
                    reason = type(exc).__name__
                    session = requests.Session()
                with lock:
                    retries[reason] += 1
                stop.wait(0.3)

    threads = [threading.Thread(target=client, daemon=True, name=f"client-{c}") for c in range(clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    try:
        while len(acked) < n * 0.4 and time.monotonic() < deadline:
            time.sleep(0.01)
        ctx.stack.signal_child("web", signal.SIGKILL)
        killed_at = time.time()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
    finally:
        stop.set()  # clients still retrying at the deadline give up (their creates count as not acknowledged)
    whole = time.time()
    created, names = ctx.db.rows(
        "SELECT count(*), count(DISTINCT name) FROM timers_timer WHERE name LIKE %s", [prefix + "%"]
    )[0]
    why = ", ".join(f"{k} ×{v}" for k, v in sorted(retries.items()))
    return Outcome(
        whole,
        [
            f"{clients} clients, {n} creates (duration 1 s), web SIGKILLed after {int(n * 0.4)} were answered",
            f"acknowledged {len(acked)} of {n}; {created} timers created, {created - names} duplicates; "
            f"retries: {why or 'none'}; the last answer {whole - killed_at:.1f} s after the kill",
        ],
    )


def power_loss(ctx: Ctx, prefix: str) -> Outcome:
    n = ctx.size(1500)
    at = time.time() + 12
    add_timers(ctx, prefix + "p", n - n // 3, at=at, spread=3)
    bundle = webhook_bundle(ctx.receiver.url("power-loss", "slow", "0.2"))
    add_timers(ctx, prefix + "h", n // 3, at=at, spread=3, bundle=bundle)
    wait_armed(ctx, prefix)
    sleep_until(at + 2)
    # Everything at once: the supervisor and its children, Redis, Postgres.
    ctx.stack.kill()
    ctx.redis.kill()
    ctx.pg.kill()
    time.sleep(2)
    ctx.pg.start()
    ctx.redis.start(empty=True)
    ctx.stack.start()
    return Outcome(
        time.time(),
        [
            "SIGKILL of runall, its children, Redis and Postgres 2 s into the batch (a third with slow webhooks); "
            "2 s later Postgres (crash recovery), Redis (empty) and make run started again"
        ],
    )


def failing_targets(ctx: Ctx, prefix: str) -> Outcome:
    n = ctx.size(500)
    at = time.time() + 12
    spread = 2.0
    dead = f"http://127.0.0.1:{free_port()}/refused"
    add_timers(
        ctx, prefix + "f", n * 2 // 5, at=at, spread=spread, bundle=webhook_bundle(ctx.receiver.url("failing", "fail"))
    )
    add_timers(
        ctx,
        prefix + "k",
        n * 2 // 5,
        at=at,
        spread=spread,
        bundle=webhook_bundle(ctx.receiver.url("failing", "flaky", "2"), attempts=5),
    )
    add_timers(ctx, prefix + "r", n // 5, at=at, spread=spread, bundle=webhook_bundle(dead))

    def after() -> None:
        pass

    outcome = Outcome(
        at + spread,
        [
            "40% to a target answering 500 (3 attempts: failed), 40% answering 503 twice then 204 (5 attempts: "
            "settled on the 3rd), 20% to a closed port (3 attempts: failed); backoff 1 s ×2"
        ],
        after=after,
    )
    return outcome


def slow_targets(ctx: Ctx, prefix: str) -> Outcome:
    at = time.time() + 12
    spread = 5.0
    slow, hung, plain = ctx.size(96), ctx.size(16), ctx.size(800)
    add_timers(
        ctx, prefix + "s", slow, at=at, spread=spread, bundle=webhook_bundle(ctx.receiver.url("slow", "slow", "2"))
    )
    add_timers(
        ctx,
        prefix + "t",
        hung,
        at=at,
        spread=spread,
        bundle=webhook_bundle(ctx.receiver.url("slow", "slow", "20"), attempts=2, timeout_ms=3000),
    )
    add_timers(ctx, prefix + "p", plain, at=at, spread=spread)
    return Outcome(
        at + spread,
        [
            f"{slow} webhooks answered after 2 s, {hung} after 20 s (timeoutMs 3000, 2 attempts: failed), "
            f"{plain} timers without actions due over the same {spread:g} s"
        ],
    )


def worker_sigterm(ctx: Ctx, prefix: str) -> Outcome:
    n = ctx.size(96)
    at = time.time() + 12
    add_timers(ctx, prefix + "h", n, at=at, spread=1, bundle=webhook_bundle(ctx.receiver.url("sigterm", "slow", "3")))
    wait_armed(ctx, prefix)
    sleep_until(at + 2)
    pid = ctx.stack.signal_child("worker", signal.SIGTERM)
    sent = time.time()
    # As `docker stop` does: SIGKILL when the worker has not exited 10 s after SIGTERM.
    if ctx.stack.wait_child_gone(pid, 10):
        how = f"it exited by itself {time.time() - sent:.1f} s later"
    else:
        killpg(pid)
        ctx.stack.wait_child_gone(pid, 10)
        how = "still running 10 s later: SIGKILLed (as docker stop does)"
    return Outcome(time.time(), [f"action worker SIGTERMed 2 s into {n} webhooks answered after 3 s; {how}"])


FAULTS = [
    Fault("firing-kill", "firing worker SIGKILL mid-burst", firing_kill),
    Fault("worker-kill", "action worker SIGKILL mid-delivery", worker_kill),
    Fault("flushall", "Redis FLUSHALL", redis_flushall),
    Fault("redis-kill", "Redis SIGKILL, restarted empty", redis_kill),
    Fault("redis-shutdown", "Redis SHUTDOWN (graceful), restarted", redis_shutdown),
    Fault("pg-restart", "Postgres restarted mid-burst", pg_restart),
    Fault("pg-down", "Postgres down", pg_down),
    Fault("two-beats", "two beats", two_beats),
    Fault("beat-down", "beat down", beat_down),
    Fault("web-kill", "web SIGKILL during concurrent creates", web_kill),
    Fault("power-loss", "whole-stack power loss", power_loss),
    Fault("failing", "failing webhook targets", failing_targets),
    Fault("slow", "slow webhook targets", slow_targets),
    Fault("sigterm", "action worker SIGTERM during slow webhooks", worker_sigterm),
]


# --- measuring ------------------------------------------------------------------------------


def batch_state(ctx: Ctx, prefix: str) -> list[tuple[Any, ...]]:
    return ctx.db.rows(
        """SELECT status, EXTRACT(EPOCH FROM fire_at), EXTRACT(EPOCH FROM fired_at), EXTRACT(EPOCH FROM settled_at)
             FROM timers_timer WHERE name LIKE %s""",
        [prefix + "%"],
    )


def measure(ctx: Ctx, fault: Fault, prefix: str, outcome: Outcome, *, settle: float, restarts_before: int) -> Row:
    deadline = outcome.whole_at + settle
    while True:
        rows = batch_state(ctx, prefix)
        open_ = sum(1 for r in rows if r[0] in ("scheduled", "armed", "fired"))
        if (rows and open_ == 0) or time.time() > deadline:
            break
        time.sleep(0.5)
    time.sleep(1)  # a late duplicate (a second fire, a webhook sent again) would show now
    rows = batch_state(ctx, prefix)
    if outcome.after is not None:
        outcome.after()
    double = ctx.db.value(
        """SELECT count(*) FROM (SELECT e.timer_id FROM timers_timerevent e JOIN timers_timer t ON t.id = e.timer_id
             WHERE t.name LIKE %s AND e.kind = 'fired' GROUP BY e.timer_id HAVING count(*) > 1) d""",
        [prefix + "%"],
    )
    lost = sum(1 for r in rows if r[0] not in ("settled", "failed", "cancelled"))
    statuses = Counter(str(r[0]) for r in rows)
    lateness = [float(r[2]) - float(r[1]) for r in rows if r[2] is not None]
    ended = [float(r[3]) for r in rows if r[3] is not None]
    recovery = (max(ended) - outcome.whole_at) if ended and not lost else None
    deliveries = ctx.receiver.of(fault.name)
    ok = Counter(d.webhook_id for d in deliveries if 200 <= d.status < 300)
    restarts = ctx.stack.restarts() - restarts_before
    misses = []
    if lost:
        misses.append(f"{lost} not ended {settle:g} s after")
    if double:
        misses.append("double-fired")
    if recovery is not None and recovery > GOAL_RECOVERY_S:
        misses.append(f"recovery > {GOAL_RECOVERY_S:g} s")
    return {
        "fault": fault.title,
        "n": len(rows),
        "lost": lost,
        "double": double,
        "deliveries": f"{len(deliveries):,} / {len({d.webhook_id for d in deliveries}):,}",
        "twice": sum(1 for c in ok.values() if c > 1),
        "lateness": (pct(lateness, 50), pct(lateness, 99), max(lateness, default=float("nan"))),
        "recovery": recovery,
        "restarts": restarts,
        "goal": "yes" if not misses else "no: " + ", ".join(misses),
        "notes": "; ".join([*outcome.notes, ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))]),
    }


def failed_row(fault: Fault, error: BaseException) -> Row:
    return {
        "fault": fault.title,
        "n": 0,
        "lost": "?",
        "double": "?",
        "deliveries": "",
        "twice": "",
        "lateness": (float("nan"),) * 3,
        "recovery": None,
        "restarts": "",
        "goal": "no: the benchmark step failed",
        "notes": f"{type(error).__name__}: {error}"[:300],
    }


def fmt_s(value: float) -> str:
    if value != value:
        return "n/a"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def table(rows: list[Row]) -> str:
    lines = [
        "| fault | N | lost | double-fired | deliveries total / distinct | sent twice | "
        "lateness p50 / p99 / max s | recovery s | restarts | goal | notes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        p50, p99, most = r["lateness"]
        recovery = "n/a" if r["recovery"] is None else fmt_s(max(0.0, r["recovery"]))
        lines.append(
            f"| {r['fault']} | {r['n']:,} | {r['lost']} | {r['double']} | {r['deliveries']} | {r['twice']} "
            f"| {fmt_s(p50)} / {fmt_s(p99)} / {fmt_s(most)} | {recovery} | {r['restarts']} | {r['goal']} "
            f"| {r['notes']} |"
        )
    return "\n".join(lines)


# --- setup ----------------------------------------------------------------------------------


def export_ref(ref: str, into: Path) -> tuple[Path, str]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    into.mkdir(parents=True)
    archive = subprocess.Popen(["git", "archive", ref], cwd=ROOT, stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=True)
    archive.wait()
    return into, commit


def describe_code(code: Path, ref: str | None, commit: str | None) -> str:
    if ref is not None:
        return f"commit {commit} (clean export of {ref})"
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    )
    return f"working tree at {head.strip()}" + (" with uncommitted changes" if dirty.stdout.strip() else "")


def stack_env(*, pg: PgCluster, redis_url: str, data_dir: Path, port: int) -> dict[str, str]:
    inherited = ("MINOOTS_", "CELERY_", "DATABASE_", "PROMETHEUS_", "DJANGO_", "GUNICORN_", "WEB_", "LOG_", "PORT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    env.update(
        {
            "DATABASE_URL": f"{pg.url}/minoots",
            "CELERY_BROKER_URL": redis_url,
            "SECRET_KEY": "bench-faults-only-secret",
            "MINOOTS_DATA_DIR": str(data_dir),
            "PORT": str(port),
            # The receiver listens on 127.0.0.1.
            "MINOOTS_WEBHOOK_ALLOW_PRIVATE": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({model or platform.machine()}), {mem:.0f} GB RAM, Python {platform.python_version()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--faults",
        default=",".join(f.name for f in FAULTS),
        help="comma-separated: " + ", ".join(f.name for f in FAULTS),
    )
    parser.add_argument("--quick", action="store_true", help="batches a quarter the size, outages half as long")
    parser.add_argument(
        "--settle",
        type=float,
        default=360.0,
        help="seconds after the system is whole again to wait for the batch to end (default 360: "
        "beyond the 5 min action lease, so runs that wait it out show as late, not lost)",
    )
    parser.add_argument("--ref", help="run a clean `git archive` export of this commit instead of the working tree")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) at the end")
    args = parser.parse_args()
    wanted = args.faults.split(",")
    unknown = set(wanted) - {f.name for f in FAULTS}
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    faults = [f for f in FAULTS if f.name in wanted]

    def on_sigterm(*_: Any) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_sigterm)

    workdir = Path(tempfile.mkdtemp(prefix="minoots-faults-"))
    started = datetime.now(UTC)
    code, commit = export_ref(args.ref, workdir / "code") if args.ref else (ROOT, None)
    pg = PgCluster(workdir)
    redis_server = RedisServer(workdir)
    receiver = Receiver()
    web_port = free_port()
    env = stack_env(pg=pg, redis_url=redis_server.url, data_dir=workdir / "data", port=web_port)
    stack = Stack(code=code, env=env, log=workdir / "runall.log", web_port=web_port)
    db = Db(f"{pg.url}/minoots")
    ctx: Ctx | None = None
    rows: list[Row] = []
    try:
        pg.init()
        pg.start()
        pg.create_database("minoots")
        redis_server.start()
        # A tree caught between commits (a model without its migration) would fail every row.
        for argv in (["check"], ["makemigrations", "--check", "--dry-run"], ["migrate", "--noinput", "-v0"]):
            done = subprocess.run(
                [sys.executable, "manage.py", *argv], cwd=code, env=env, capture_output=True, text=True
            )
            if done.returncode != 0:
                raise SystemExit(f"manage.py {argv[0]} failed on {code}:\n{(done.stdout + done.stderr)[-3000:]}")
        key = (
            subprocess.run(
                [sys.executable, "manage.py", "create_api_key", "bench"],
                cwd=code,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        stack.start()
        stack.wait_healthy()
        ctx = Ctx(pg, redis_server, stack, receiver, db, key, args.quick, workdir)
        print(f"faults bench: {describe_code(code, args.ref, commit)}; logs in {workdir}", flush=True)
        for fault in faults:
            stack.wait_healthy()
            before = stack.restarts()
            prefix = f"f-{fault.name}-"
            print(f"- {fault.title} ...", end=" ", flush=True)
            t0 = time.monotonic()
            try:
                outcome = fault.inject(ctx, prefix)
                row = measure(ctx, fault, prefix, outcome, settle=args.settle, restarts_before=before)
            except Exception as exc:  # one broken step must not hide the other rows
                row = failed_row(fault, exc)
            rows.append(row)
            print(f"{time.monotonic() - t0:.0f} s: {row['goal']}", flush=True)
    finally:
        if ctx is not None:
            for proc in ctx.extra:
                killpg(proc.pid)
        stack.kill()
        for pid in stack.seen_pids:
            if pid_alive(pid):
                killpg(pid)
        redis_server.kill()
        pg.stop("immediate")
        pg.kill()
        receiver.close()
        db.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        if rows:  # also when interrupted: the rows measured so far
            report(rows, started=started, code=describe_code(code, args.ref, commit), args=args)
    return 0


def report(rows: list[Row], *, started: datetime, code: str, args: argparse.Namespace) -> None:
    print(
        f"\nMINOOTS faults, {started:%Y-%m-%d %H:%M}Z, {machine()}; {code}; "
        f"make run (runall) on a private Postgres and Redis, MINOOTS settings at their defaults"
        f"{' (quick)' if args.quick else ''}; settle {args.settle:g} s\n"
    )
    print(table(rows), flush=True)


if __name__ == "__main__":
    sys.exit(main())
