"""MINOOTS vs plain Celery ETA tasks, side by side, on this machine.

Usage (from the repository root, after `make test` or `make bench` created .venv):

    .venv/bin/python bench/timers.py                  # every case, full size (~10 min)
    .venv/bin/python bench/timers.py --quick          # smaller sizes, to try it out
    .venv/bin/python bench/timers.py --cases burst,webhook --plots /tmp/plots

It uses the local Postgres (database ``minoots_bench``, re-created each run) and Redis
(db 10 for MINOOTS, db 11 for the plain Celery baseline), starts and stops its own web
(gunicorn), worker and beat processes. It prints a table per case, then ends with one
Markdown summary table (bench/report.py): a row per figure of issue 14, MINOOTS beside its
baseline and its goal, met or not, lost and double-fired; figures not measured (or cases not
chosen) say so. It writes that table to <--plots>/summary.md with the PNG plots: lateness
distribution (histogram and CDF) and lateness over time per case and system, and the webhook
case's delivery rate over time (default directory bench/out, gitignored). The workers are those of
``make run`` and compose: one firing worker (``-Q timers``, ``--firing-concurrency`` threads)
plus ``--workers`` action workers (``-Q actions``, ``--concurrency`` threads each). Cases:

- steady:  N timers/s for S seconds over HTTP, fireAt 5–30 s ahead -> lateness, lost, double-fired
- burst:   10,000 timers with the same fireAt -> lateness, time until the last one fired
- batch:   100,000 timers created through POST /api/timers/batch, 1,000 a request from 4 clients, against a
           web as make run starts it (gunicorn.conf.py, 2 gevent workers) -> timers/s, and their lateness
- create:  POST /api/timers from 16 keep-alive clients for 20 s against MINOOTS and against a bare
           Django + DRF insert endpoint (bench/bare_drf), both served as make run serves MINOOTS ->
           creates/s, response p50/p99, the ratio; then 200 creates/s paced -> response p99
- scale:   1,000 then 1,000,000 timers pending beyond the horizon (--scale-counts; each count
           bulk-loaded, its load time reported) -> worker RSS, Redis memory, reconcile duration
           p99; then GET /api/timers, the admin dashboard and the admin timer list p99 (20 each)
- webhook: 10,000 timers with the same fireAt, one webhook each to a local receiver ->
           arrival lateness (arrival minus fireAt), attempts per second
- slowclients: 200 slowloris connections and 50 open event streams against one web server
           while /healthz and creates are probed -> their response times; beside it the gthread
           web before it, unless --no-baseline (bench/web_tier.py)
- starvation: 50 webhook timers to a receiver that accepts and never answers (timeoutMs 5 s,
           more hung attempts than there are action threads), and 200 timers without actions
           due meanwhile (over 4 s) -> those 200 timers' lateness; beside it the same case on
           one shared worker for both queues (the topology before the firing worker), unless
           --no-baseline
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VENV_BIN = Path(sys.executable).parent
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
DB_NAME = os.environ.get("BENCH_DB", "minoots_bench")
BROKER = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/10")
BASELINE_BROKER = os.environ.get("BENCH_BASELINE_BROKER", "redis://127.0.0.1:6379/11")
# Another directory (and BENCH_DB, BENCH_BROKER) for a second run at the same time.
DATA_DIR = Path(os.environ.get("BENCH_DATA_DIR", str(ROOT / ".data" / "bench")))

ENV = {
    **os.environ,
    "DATABASE_URL": f"{PG}/{DB_NAME}",
    "CELERY_BROKER_URL": BROKER,
    "BENCH_BASELINE_BROKER": BASELINE_BROKER,
    "SECRET_KEY": "bench-only-secret",
    "MINOOTS_DATA_DIR": str(DATA_DIR),
    "MINOOTS_DEFAULT_MAX_ACTIVE_TIMERS": "100000000",
    "MINOOTS_DEFAULT_MAX_CREATES_PER_DAY": "100000000",
    "MINOOTS_WEBHOOK_ALLOW_PRIVATE": "true",
    "LOG_LEVEL": "WARNING",
    "PYTHONUNBUFFERED": "1",
}
ENV.pop("PROMETHEUS_MULTIPROC_DIR", None)


# --- processes -----------------------------------------------------------------------------


class Group:
    """Child processes, each in its own process group, all killed on exit."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, argv: list[str], ready: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        log = DATA_DIR / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=env or ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append((name, proc))
        deadline = time.monotonic() + 60
        while ready not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(10)
                if sig == signal.SIGTERM:
                    os.killpg(proc.pid, signal.SIGKILL)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                continue
            return

    def stop_some(self, procs: list[subprocess.Popen[bytes]]) -> None:
        for proc in procs:
            self.stop(proc)
        self.procs = [(name, proc) for name, proc in self.procs if proc not in procs]

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()


def worker_argv(app: str, queues: str | None, concurrency: int, node: str | None = None) -> list[str]:
    argv = [
        str(VENV_BIN / "celery"),
        "-A",
        app,
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(concurrency),
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel",
        "INFO",
        "-n",
        f"{node or app}-{uuid.uuid4().hex[:6]}@%h",
    ]
    return argv + (["-Q", queues] if queues else [])


def start_workers(
    group: Group, *, topology: str, workers: int, concurrency: int, firing_concurrency: int
) -> list[subprocess.Popen[bytes]]:
    """``split``: what ``make run`` and compose run, a firing worker (queue timers only) and
    ``workers`` action workers (queue actions only). ``shared``: the topology before it, one
    worker consuming both queues, so actions and firing share its threads."""
    if topology == "shared":
        argv = worker_argv("minoots_project", "timers,actions", concurrency, node="shared")
        return [group.start("shared-worker", argv, " ready.")]
    firing = worker_argv("minoots_project", "timers", firing_concurrency, node="firing")
    procs = [group.start("firing", firing, " ready.")]
    for i in range(workers):
        argv = worker_argv("minoots_project", "actions", concurrency, node=f"worker{i}")
        procs.append(group.start(f"worker{i}", argv, " ready."))
    return procs


def rss_mb(proc: subprocess.Popen[bytes]) -> float:
    try:
        root = psutil.Process(proc.pid)
        procs = [root, *root.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / 2**20
    except psutil.NoSuchProcess:
        return float("nan")


# --- stats ----------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return predicate()


# --- database -------------------------------------------------------------------------------


def recreate_database() -> None:
    conn = psycopg2.connect(f"{PG}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {DB_NAME}")
    conn.close()
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=ENV, check=True)


@contextmanager
def db() -> Iterator[Any]:
    conn = psycopg2.connect(f"{PG}/{DB_NAME}")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def insert_scheduled(
    cur: Any, *, prefix: str, count: int, fire_at_sql: str, bundle: dict[str, Any] | None = None
) -> None:
    """Bulk insert ``count`` scheduled timers in one statement (as an import would)."""
    cur.execute(
        f"""
        INSERT INTO timers_timer (id, tenant_id, name, status, duration_ms, created_at, fire_at, requested_by,
            metadata, labels, action_bundle, state_version, cancel_reason, cancelled_by, failure_reason, request_hash)
        SELECT gen_random_uuid(), 'bench', %s || g, 'scheduled', 0, now(), {fire_at_sql}, 'bench',
               '{{}}'::jsonb, '{{}}'::jsonb, %s::jsonb, 1, '', '', '', ''
          FROM generate_series(1, %s) AS g
        """,
        [prefix, json.dumps(bundle) if bundle else None, count],
    )


def lateness_of(cur: Any, prefix: str) -> tuple[list[float], int, int, list[float]]:
    """(lateness ms of fired timers, unfired count, double-fired count, fired_at epochs)."""
    cur.execute(
        """SELECT EXTRACT(EPOCH FROM (fired_at - fire_at)) * 1000, EXTRACT(EPOCH FROM fired_at)
             FROM timers_timer WHERE name LIKE %s AND fired_at IS NOT NULL""",
        [prefix + "%"],
    )
    rows = cur.fetchall()
    cur.execute("SELECT count(*) FROM timers_timer WHERE name LIKE %s AND fired_at IS NULL", [prefix + "%"])
    unfired = cur.fetchone()[0]
    cur.execute(
        """SELECT count(*) FROM (SELECT e.timer_id FROM timers_timerevent e JOIN timers_timer t ON t.id = e.timer_id
             WHERE t.name LIKE %s AND e.kind = 'fired' GROUP BY e.timer_id HAVING count(*) > 1) d""",
        [prefix + "%"],
    )
    double = cur.fetchone()[0]
    return [float(r[0]) for r in rows], unfired, double, [float(r[1]) for r in rows]


def pending(cur: Any, prefix: str) -> int:
    cur.execute("SELECT count(*) FROM timers_timer WHERE name LIKE %s AND fired_at IS NULL", [prefix + "%"])
    return int(cur.fetchone()[0])


# --- cases ----------------------------------------------------------------------------------

Row = dict[str, Any]


def steady_minoots(api: str, key: str, rate: int, seconds: int, *, via: str) -> tuple[Row, list[float]]:
    """``via="service"``: the bench process calls timer_create, as a Celery producer calls
    apply_async (the engine's cost, comparable with the baseline). ``via="http"``: POST
    /api/timers through gunicorn (adds the web tier; on 2 cores it competes with the workers)."""
    sessions = threading.local()
    prefix = f"steady-{via}-"
    tenant: Any = None
    if via == "service":
        setup_django()
        from timers.models import Tenant
        from timers.services import TimerSpec, timer_create

        tenant = Tenant.objects.get(pk="bench")

    def post(fire_at: datetime, i: int) -> int:
        if via == "service":
            # Each pool thread keeps its database connection, as a web worker thread does.
            timer_create(tenant=tenant, spec=TimerSpec(name=f"{prefix}{i}", fire_at=fire_at))
            return 201
        if not hasattr(sessions, "s"):
            sessions.s = requests.Session()
        body = {"name": f"{prefix}{i}", "fireAt": fire_at.isoformat(timespec="milliseconds")}
        return sessions.s.post(f"{api}/api/timers", json=body, headers={"X-API-Key": key}, timeout=30).status_code

    statuses: list[Any] = []
    last_fire = datetime.now(UTC)
    with ThreadPoolExecutor(max_workers=16) as pool:
        start = time.monotonic()
        for i in range(rate * seconds):
            target = start + i / rate
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            fire_at = datetime.now(UTC) + timedelta(seconds=random.uniform(5, 30))
            last_fire = max(last_fire, fire_at)
            statuses.append(pool.submit(post, fire_at, i))
        codes = [f.result() for f in statuses]
    created = sum(1 for c in codes if c == 201)
    with db() as cur:
        wait_until(
            lambda: pending(cur, prefix) == 0 or datetime.now(UTC) > last_fire + timedelta(seconds=15), timeout=120
        )
        lat, unfired, double, fired = lateness_of(cur, prefix)
    refused = len(codes) - created
    note = f"{rate}/s for {seconds}s via {'POST /api/timers' if via == 'http' else 'timer_create()'}"
    if refused:
        note += f"; {refused} creates refused ({sorted(set(c for c in codes if c != 201))})"
    return (
        {
            "case": f"steady ({via})",
            "system": "minoots",
            "n": created,
            "p50": pct(lat, 50),
            "p99": pct(lat, 99),
            "max": max(lat, default=float("nan")),
            "lost": unfired,
            "double": double,
            "note": note,
            "samples": {"lateness_ms": lat, "at": fired},
        },
        lat,
    )


def baseline_results(r: redis.Redis) -> tuple[dict[str, float], dict[str, int], dict[str, float]]:
    lat = {k.decode(): float(v) * 1000 for k, v in r.hgetall("baseline:lateness").items()}
    counts = {k.decode(): int(v) for k, v in r.hgetall("baseline:count").items()}
    ran = {k.decode(): float(v) for k, v in r.hgetall("baseline:ran_at").items()}
    return lat, counts, ran


def steady_celery(rate: int, seconds: int) -> tuple[Row, list[float]]:
    from bench.baseline_app import app, publish_probe

    conn = app.connection_for_write(url=BASELINE_BROKER)

    r = redis.Redis.from_url(BASELINE_BROKER)
    ids: list[str] = []
    last_fire = 0.0
    start = time.monotonic()
    for i in range(rate * seconds):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        fire_at = time.time() + random.uniform(5, 30)
        last_fire = max(last_fire, fire_at)
        tid = f"steady-{i}"
        ids.append(tid)
        publish_probe(conn, tid, fire_at)
    wait_until(lambda: r.hlen("baseline:count") >= len(ids) or time.time() > last_fire + 15, timeout=120)
    lat, counts, ran = baseline_results(r)
    values = [lat[i] for i in ids if i in lat]
    return (
        {
            "case": "steady (apply_async)",
            "system": "celery eta",
            "n": len(ids),
            "p50": pct(values, 50),
            "p99": pct(values, 99),
            "max": max(values, default=float("nan")),
            "lost": sum(1 for i in ids if i not in counts),
            "double": sum(1 for i in ids if counts.get(i, 0) > 1),
            "note": "apply_async(eta=...)",
            "samples": {"lateness_ms": values, "at": [ran.get(i, lat[i] / 1000) for i in ids if i in lat]},
        },
        values,
    )


def burst_minoots(count: int, lead: int) -> tuple[Row, list[float]]:
    with db() as cur:
        cur.execute("SELECT now() + %s * interval '1 second'", [lead])
        fire_at = cur.fetchone()[0]
        insert_scheduled(cur, prefix="burst-", count=count, fire_at_sql=f"'{fire_at.isoformat()}'::timestamptz")
        wait_until(lambda: pending(cur, "burst-") == 0, timeout=lead + 120)
        lat, unfired, double, fired_epochs = lateness_of(cur, "burst-")
    last = (max(fired_epochs) - fire_at.timestamp()) if fired_epochs else float("nan")
    return (
        {
            "case": "burst",
            "system": "minoots",
            "n": count,
            "p50": pct(lat, 50),
            "p99": pct(lat, 99),
            "max": max(lat, default=float("nan")),
            "lost": unfired,
            "double": double,
            "note": f"last fired {last:.2f} s after fireAt",
            "samples": {"lateness_ms": lat, "at": fired_epochs, "t0": fire_at.timestamp()},
        },
        lat,
    )


def burst_celery(count: int, lead: int) -> tuple[Row, list[float]]:
    from bench.baseline_app import app, publish_probe

    conn = app.connection_for_write(url=BASELINE_BROKER)

    r = redis.Redis.from_url(BASELINE_BROKER)
    fire_at = time.time() + lead
    ids = [f"burst-{i}" for i in range(count)]
    for tid in ids:
        publish_probe(conn, tid, fire_at)
    wait_until(lambda: sum(1 for i in ids if r.hexists("baseline:count", i)) >= count, timeout=lead + 120)
    lat, counts, ran = baseline_results(r)
    values = [lat[i] for i in ids if i in lat]
    last = max((ran[i] for i in ids if i in ran), default=float("nan")) - fire_at
    return (
        {
            "case": "burst",
            "system": "celery eta",
            "n": count,
            "p50": pct(values, 50),
            "p99": pct(values, 99),
            "max": max(values, default=float("nan")),
            "lost": sum(1 for i in ids if i not in counts),
            "double": sum(1 for i in ids if counts.get(i, 0) > 1),
            "note": f"last ran {last:.2f} s after eta",
            "samples": {"lateness_ms": values, "at": [ran.get(i, fire_at) for i in ids if i in lat], "t0": fire_at},
        },
        values,
    )


def setup_django() -> None:
    """Configure Django in this process the way the bench's own processes are."""
    import django

    os.environ.update(
        {
            k: v
            for k, v in ENV.items()
            if k.startswith(("DATABASE_URL", "CELERY_", "SECRET_KEY", "MINOOTS_", "LOG_LEVEL"))
        }
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "minoots_project.settings")
    django.setup()


def reconcile_p99(passes: int) -> float:
    setup_django()
    from timers import engine

    for _ in range(3):  # warm up connections and caches; beat runs warm passes too
        engine.reconcile()
    durations = [engine.reconcile().duration_ms for _ in range(passes)]
    return pct(durations, 99)


def page_p99s(api: str, key: str, renders: int) -> dict[str, float]:
    """After a first (cold) request each: p99 of ``renders`` GET /api/timers over HTTP (the
    bench's web) and of the admin dashboard and timer list rendered in this process by Django's
    test client as a superuser (as bench/dashboard.py does), in ms."""
    setup_django()
    from django.contrib.auth import get_user_model
    from django.test import Client

    user_model = get_user_model()
    user = user_model.objects.filter(username="bench-admin").first() or user_model.objects.create_superuser(
        "bench-admin", "bench@example.com", "unused-password"
    )
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    session = requests.Session()

    def api_list() -> None:
        response = session.get(f"{api}/api/timers", headers={"X-API-Key": key}, timeout=30)
        assert response.status_code == 200, response.status_code

    def admin(url: str) -> Callable[[], None]:
        def render() -> None:
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)

        return render

    out = {}
    for name, call in (
        ("list_p99", api_list),
        ("dashboard_p99", admin("/admin/")),
        ("admin_list_p99", admin("/admin/timers/timer/")),
    ):
        call()
        times = []
        for _ in range(renders):
            t0 = time.perf_counter()
            call()
            times.append((time.perf_counter() - t0) * 1000)
        out[name] = pct(times, 99)
    return out


# Rows a statement of the scale case's bulk load inserts (one transaction each, so a load of
# ten million never holds one huge transaction, nor its queue of deferred checks).
SCALE_LOAD_CHUNK = 1_000_000


def bulk_load_scheduled(*, prefix: str, first: int, count: int, fire_at_sql: str) -> float:
    """Insert ``count`` scheduled timers, numbered from ``first``, as fast as Postgres takes
    them; return the seconds it took, VACUUM ANALYZE included.

    One ``INSERT ... SELECT FROM generate_series`` a chunk, built in the server (COPY would
    send the same rows over the socket first). The foreign keys' checks are off for this
    session (``session_replication_role = replica``: every row names the existing ``bench``
    tenant, so they could only pass; they are a deferred trigger per row), and so is the wait
    for the WAL flush at each commit. Every row gets its own ``created_at`` (one a millisecond
    back from now) so the lists page through distinct keys as real data does. VACUUM ANALYZE
    leaves the table as autovacuum would: planner statistics, and a visibility map that lets
    counts read indexes alone.
    """
    started = time.perf_counter()
    conn = psycopg2.connect(f"{PG}/{DB_NAME}")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET session_replication_role = replica")
            cur.execute("SET synchronous_commit = off")
            for low in range(first, first + count, SCALE_LOAD_CHUNK):
                high = min(first + count, low + SCALE_LOAD_CHUNK) - 1
                cur.execute(
                    f"""
                    INSERT INTO timers_timer (id, tenant_id, name, status, duration_ms, created_at, fire_at,
                        requested_by, metadata, labels, action_bundle, state_version, cancel_reason, cancelled_by,
                        failure_reason, request_hash)
                    SELECT gen_random_uuid(), 'bench', %s || g, 'scheduled', 0, now() - g * interval '1 ms',
                           {fire_at_sql}, 'bench', '{{}}'::jsonb, '{{}}'::jsonb, NULL, 1, '', '', '', ''
                      FROM generate_series(%s::bigint, %s::bigint) AS g
                    """,
                    [prefix, low, high],
                )
            cur.execute("VACUUM (ANALYZE) timers_timer")
    finally:
        conn.close()
    return time.perf_counter() - started


def scale_case(
    workers: list[subprocess.Popen[bytes]], counts: list[int], settle: int, *, api: str, key: str, renders: int = 20
) -> list[Row]:
    """Worker RSS, Redis memory and reconcile p99 with each count pending; then (measured after
    those, so they do not change them) the p99 of the API list and the admin pages. Each count
    is reached by bulk-loading the difference (``bulk_load_scheduled``); its row says how long
    that took."""
    rows = []
    r = redis.Redis.from_url(BROKER)
    inserted = 0
    for target in counts:
        seconds = bulk_load_scheduled(
            prefix="scale-",
            first=inserted + 1,
            count=target - inserted,
            fire_at_sql="now() + interval '2 hours' + (g %% 2592000) * interval '1 second'",
        )
        loaded = target - inserted
        print(f"scale: {loaded:,} timers loaded in {seconds:.1f} s ({loaded / seconds:,.0f}/s), {target:,} pending")
        inserted = target
        time.sleep(settle)  # let beat run several reconcile passes against the new table
        rows.append(
            {
                "case": f"scale {target:,} pending",
                "system": "minoots",
                "n": target,
                "worker_rss_mb": sum(rss_mb(w) for w in workers),
                "redis_mb": r.info("memory")["used_memory"] / 2**20,
                "reconcile_p99": reconcile_p99(40),
                "loaded": loaded,
                "load_s": seconds,
            }
        )
        rows[-1].update(page_p99s(api, key, renders))
    return rows


def start_make_run_web(group: Group, free_port: Callable[[], int], name: str) -> str:
    """A web process as ``make run`` starts it (gunicorn -c minoots_project/gunicorn.conf.py:
    WEB_CONCURRENCY=2 gevent workers); return its base URL once it answers /healthz."""
    port = free_port()
    group.start(
        name,
        [str(VENV_BIN / "gunicorn"), "-c", "minoots_project/gunicorn.conf.py", "minoots_project.wsgi"],
        ready="Booting worker",  # said at INFO
        env={**ENV, "LOG_LEVEL": "INFO", "PORT": str(port), "BIND_HOST": "127.0.0.1", "WEB_CONCURRENCY": "2"},
    )
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: _answers(f"{base}/healthz"), timeout=30)
    return base


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and its live children."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _backends_cpu() -> dict[int, float]:
    """CPU seconds of each Postgres backend connected to the bench's database (the web's pooled
    connections, the workers', beat's): the database's share of the work, whichever other
    databases the server holds."""
    with db() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [DB_NAME])
        pids = [r[0] for r in cur.fetchall()]
    found = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        found[pid] = times.user + times.system
    return found


def batch_case(
    api: str, key: str, *, total: int, per_request: int, clients: int, lead: float, web_pid: int | None = None
) -> tuple[Row, list[float]]:
    """``total`` timers created through POST /api/timers/batch, ``per_request`` a request, from
    ``clients`` keep-alive clients at once, as fast as the server answers; each request's timers
    due over the 10 s after ``lead`` seconds from when it is sent (about 1,000 tick buckets in
    all; due from its send, so a slow machine does not make them past). Timers/s is created
    timers over the wall time from the first request to the last answer. Beside it, the CPU
    spent per 1,000 timers created by the web process (``web_pid`` and its workers), by the
    bench database's Postgres backends and by this client: figures a machine shared with other
    work moves less than the wall time."""
    prefix = "batch-"
    sessions = threading.local()
    headers = {"X-API-Key": key, "Content-Type": "application/json"}

    def body_of(first: int) -> bytes:
        sent = datetime.now(UTC)
        timers = [
            {
                "name": f"{prefix}{i}",
                "fireAt": (sent + timedelta(seconds=lead + random.uniform(0, 10))).isoformat(timespec="milliseconds"),
            }
            for i in range(first, min(total, first + per_request))
        ]
        return json.dumps({"timers": timers}).encode()

    def post(first: int) -> tuple[float, dict[int, int]]:
        if not hasattr(sessions, "s"):
            sessions.s = requests.Session()
            sessions.s.get(f"{api}/healthz", timeout=10)  # connected before its first request
        body = body_of(first)
        t0 = time.perf_counter()
        response = sessions.s.post(f"{api}/api/timers/batch", data=body, headers=headers, timeout=120)
        elapsed = (time.perf_counter() - t0) * 1000
        counts: dict[int, int] = {}
        if response.status_code != 200:
            counts[response.status_code] = -1
            return elapsed, counts
        for result in response.json()["results"]:
            counts[result["status"]] = counts.get(result["status"], 0) + 1
        return elapsed, counts

    web0 = _tree_cpu(web_pid) if web_pid else 0.0
    pg0, client0 = _backends_cpu(), time.process_time()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        t0 = time.monotonic()
        answers = list(pool.map(post, range(0, total, per_request)))
        wall = time.monotonic() - t0
    client_cpu = time.process_time() - client0
    pg_cpu = sum(cpu - pg0.get(pid, 0.0) for pid, cpu in _backends_cpu().items())
    web_cpu = _tree_cpu(web_pid) - web0 if web_pid else float("nan")
    statuses: dict[int, int] = {}
    for _, counts in answers:
        for code, n in counts.items():
            statuses[code] = statuses.get(code, 0) + n
    created = statuses.get(201, 0)
    request_ms = [elapsed for elapsed, _ in answers]
    rate = created / wall if wall else float("nan")
    with db() as cur:
        deadline = datetime.now(UTC) + timedelta(seconds=lead + 10 + 20)
        wait_until(lambda: pending(cur, prefix) == 0 or datetime.now(UTC) > deadline, timeout=lead + 120)
        lat, unfired, double, fired = lateness_of(cur, prefix)
    per_1000 = 1000 / created * 1000 if created else float("nan")  # seconds -> ms per 1,000 timers
    cpu = {"web": web_cpu * per_1000, "postgres": pg_cpu * per_1000, "client": client_cpu * per_1000}
    note = (
        f"{rate:,.0f} timers/s created ({created:,} in {wall:.2f} s; {per_request} per request, {clients} clients; "
        f"request p50 {pct(request_ms, 50):.0f} ms, p99 {pct(request_ms, 99):.0f} ms; CPU ms per 1,000 timers: "
        f"web {cpu['web']:.0f}, Postgres {cpu['postgres']:.0f}, client {cpu['client']:.0f}); lateness of them all"
    )
    other = {code: n for code, n in statuses.items() if code != 201}
    if other:
        note += f"; other statuses {other}"
    return (
        {
            "case": "batch create",
            "system": "minoots",
            "n": created,
            "p50": pct(lat, 50),
            "p99": pct(lat, 99),
            "max": max(lat, default=float("nan")),
            "lost": unfired,
            "double": double,
            "note": note,
            "timers_per_s": rate,
            "request_p50": pct(request_ms, 50),
            "request_p99": pct(request_ms, 99),
            "cpu_ms_per_1000": cpu,
            "samples": {"lateness_ms": lat, "at": fired},
        },
        lat,
    )


BARE_TABLE_SQL = (
    "CREATE TABLE IF NOT EXISTS bare_timer (id uuid PRIMARY KEY, name varchar(200) NOT NULL, "
    "fire_at timestamptz NOT NULL, created_at timestamptz NOT NULL)"
)


def start_gunicorn_web(group: Group, free_port: Callable[[], int], name: str, wsgi: str, **env: str) -> str:
    """``wsgi`` served as ``make run`` serves MINOOTS (``gunicorn -c minoots_project/gunicorn.conf.py``:
    gevent workers, WEB_CONCURRENCY=2, its keepalive); return the base URL once it answers."""
    port = free_port()
    group.start(
        name,
        [str(VENV_BIN / "gunicorn"), "-c", "minoots_project/gunicorn.conf.py", wsgi],
        ready="Booting worker",
        env={**ENV, "LOG_LEVEL": "INFO", "PORT": str(port), "BIND_HOST": "127.0.0.1", "WEB_CONCURRENCY": "2", **env},
    )
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return requests.get(f"{base}/api/timers", timeout=2).status_code in (401, 403, 405)
        except requests.RequestException:
            return False

    wait_until(answers, timeout=30)
    return base


def _create_body(prefix: str, i: int) -> bytes:
    fire_at = datetime.now(UTC) + timedelta(seconds=random.uniform(5, 30))
    return json.dumps({"name": f"{prefix}{i}", "fireAt": fire_at.isoformat(timespec="milliseconds")}).encode()


def create_closed(api: str, headers: dict[str, str], *, prefix: str, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` keep-alive clients, each POSTing one create after the other for ``seconds``:
    creates/s (201s over the wall time), latency p50/p99, other statuses."""
    stop_at = time.monotonic() + seconds
    results: list[tuple[list[float], dict[int, int]]] = []
    counter = iter(range(10**9))

    def client() -> None:
        session = requests.Session()
        session.get(f"{api}/api/timers", timeout=10)  # connected before the clock runs
        latencies: list[float] = []
        codes: dict[int, int] = {}
        while time.monotonic() < stop_at:
            body = _create_body(prefix, next(counter))
            t0 = time.perf_counter()
            code = session.post(f"{api}/api/timers", data=body, headers=headers, timeout=30).status_code
            latencies.append((time.perf_counter() - t0) * 1000)
            codes[code] = codes.get(code, 0) + 1
        results.append((latencies, codes))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    latencies = [ms for lat, _ in results for ms in lat]
    codes: dict[int, int] = {}
    for _, c in results:
        for code, n in c.items():
            codes[code] = codes.get(code, 0) + n
    created = codes.get(201, 0)
    return {
        "rate": created / wall,
        "n": created,
        "p50": pct(latencies, 50),
        "p99": pct(latencies, 99),
        "max": max(latencies, default=float("nan")),
        "other": {k: v for k, v in codes.items() if k != 201},
    }


def create_paced(api: str, headers: dict[str, str], *, prefix: str, rate: int, seconds: float) -> dict[str, Any]:
    """``rate`` creates/s for ``seconds``, each sent at its instant on one of 16 keep-alive
    clients: latency p50/p99/max, measured from the instant it was due (queueing counts)."""
    sessions = threading.local()

    def post(due: float, i: int) -> tuple[float, int]:
        if not hasattr(sessions, "s"):
            sessions.s = requests.Session()
        code = sessions.s.post(
            f"{api}/api/timers", data=_create_body(prefix, i), headers=headers, timeout=30
        ).status_code
        return (time.perf_counter() - due) * 1000, code

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda _: requests.Session, range(16)))
        start = time.perf_counter() + 0.2
        futures = []
        for i in range(int(rate * seconds)):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(post, due, i))
        answers = [f.result() for f in futures]
    latencies = [ms for ms, _ in answers]
    other: dict[int, int] = {}
    for _, code in answers:
        if code != 201:
            other[code] = other.get(code, 0) + 1
    return {
        "rate": rate,
        "n": len(answers) - sum(other.values()),
        "p50": pct(latencies, 50),
        "p99": pct(latencies, 99),
        "max": max(latencies, default=float("nan")),
        "other": other,
    }


def create_case(
    group: Group, free_port: Callable[[], int], key: str, *, seconds: float, clients: int, rate: int
) -> list[Row]:
    """POST /api/timers against MINOOTS (the engine's workers firing what it creates) and the
    bare Django + DRF insert (bench/bare_drf) in the same run, each served by gunicorn as
    ``make run`` serves MINOOTS; then MINOOTS paced at ``rate`` creates/s. Latency is the
    response time; the ratio is MINOOTS' creates/s over the baseline's."""
    with db() as cur:
        cur.execute(BARE_TABLE_SQL)
    bare = start_gunicorn_web(
        group, free_port, "web-bare-drf", "bench.bare_drf.wsgi", DJANGO_SETTINGS_MODULE="bench.bare_drf.settings"
    )
    minoots = start_gunicorn_web(group, free_port, "web-create", "minoots_project.wsgi")
    json_headers = {"Content-Type": "application/json"}
    runs = {
        "bare django+drf": create_closed(bare, json_headers, prefix="bare-", clients=clients, seconds=seconds),
        "minoots": create_closed(
            minoots, {**json_headers, "X-API-Key": key}, prefix="create-", clients=clients, seconds=seconds
        ),
    }
    paced = create_paced(minoots, {**json_headers, "X-API-Key": key}, prefix="paced-", rate=rate, seconds=seconds)
    ratio = runs["minoots"]["rate"] / runs["bare django+drf"]["rate"]
    load = os.getloadavg()
    rows: list[Row] = []
    for system, r in runs.items():
        note = (
            f"{r['rate']:,.0f} creates/s, {clients} keep-alive clients for {seconds:g} s; response time"
            + (f"; ratio to bare {ratio:.2f}" if system == "minoots" else "")
            + (f"; other statuses {r['other']}" if r["other"] else "")
            + f"; load {load[0]:.2f}"
        )
        rows.append(
            {
                "case": "create (http)",
                "system": system,
                "n": r["n"],
                "p50": r["p50"],
                "p99": r["p99"],
                "max": r["max"],
                "lost": "",
                "double": "",
                "note": note,
                "creates_per_s": r["rate"],
            }
        )
    rows.append(
        {
            "case": f"create paced {rate}/s",
            "system": "minoots",
            "n": paced["n"],
            "p50": paced["p50"],
            "p99": paced["p99"],
            "max": paced["max"],
            "lost": "",
            "double": "",
            "note": f"{rate} creates/s for {seconds:g} s, response time from the instant due"
            + (f"; other statuses {paced['other']}" if paced["other"] else ""),
        }
    )
    return rows


def webhook_case(count: int, lead: int) -> tuple[Row, list[float]]:
    """``count`` webhook timers due at the same instant, to a keep-alive receiver in a process
    of its own (bench/webhook_receiver.py): arrival minus fireAt, attempts/s, each webhook-id
    once."""
    from bench.fast_receiver import FastReceiver

    receiver = FastReceiver(DATA_DIR / "receiver")
    bundle = {"actions": [{"id": "notify", "kind": "webhook", "parameters": {"url": receiver.url}}]}
    try:
        with db() as cur:
            cur.execute("SELECT now() + %s * interval '1 second'", [lead])
            fire_at = cur.fetchone()[0]
            insert_scheduled(
                cur, prefix="hook-", count=count, fire_at_sql=f"'{fire_at.isoformat()}'::timestamptz", bundle=bundle
            )
            wait_until(lambda: receiver.count() >= count, timeout=lead + 180)
            time.sleep(1.0)  # a repeated delivery would arrive about now
            cur.execute(
                """SELECT count(*), EXTRACT(EPOCH FROM max(a.finished_at) - min(a.started_at))
                     FROM actions_actionattempt a JOIN actions_actionrun r ON r.id = a.run_id
                     JOIN timers_timer t ON t.id = r.timer_id WHERE t.name LIKE 'hook-%%'"""
            )
            attempts, span = cur.fetchone()
        arrivals = receiver.first_arrivals()
        repeated = receiver.repeated_webhook_ids()
    finally:
        receiver.close()
    lat = [(at - fire_at.timestamp()) * 1000 for at in arrivals.values()]
    rate = attempts / float(span) if span else float("nan")
    return (
        {
            "case": "webhook burst",
            "system": "minoots",
            "n": count,
            "p50": pct(lat, 50),
            "p99": pct(lat, 99),
            "max": max(lat, default=float("nan")),
            "lost": count - len(arrivals),
            "double": repeated,
            "note": f"arrival - fireAt; {attempts} attempts at {rate:.0f}/s; webhook-ids repeated: {repeated}",
            "attempts_per_s": rate,
            "samples": {"lateness_ms": lat, "at": list(arrivals.values()), "t0": fire_at.timestamp()},
        },
        lat,
    )


class HangingReceiver:
    """Accepts every connection and never answers (nor reads the request): each webhook attempt
    to it holds its action thread until its timeoutMs."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.closing = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.closing:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(conn)

    def close(self) -> None:
        self.closing = True
        self.thread.join(timeout=2)
        self.server.close()
        for conn in self.connections:
            conn.close()


def starvation_case(system: str, *, hooks: int, plain: int, lead: int, timeout_ms: int, spread: float) -> Row:
    """``hooks`` webhook timers to a receiver that never answers, 20 ms apart (one tick, so one
    run_actions message, each: each takes an action thread of its own), then ``plain`` timers
    without actions due meanwhile, from 1 s after the first webhook over ``spread`` seconds:
    how late do those fire?"""
    receiver = HangingReceiver()
    url = f"http://127.0.0.1:{receiver.port}/hook"
    bundle = {
        "actions": [{"id": "hang", "kind": "webhook", "parameters": {"url": url, "timeoutMs": timeout_ms}}],
        "retryPolicy": {"maxAttempts": 1},
    }
    tag = system.split()[0].strip(":")
    hook_prefix, plain_prefix = f"starve-{tag}-hook-", f"starve-{tag}-plain-"
    step_ms = spread * 1000 / plain
    try:
        with db() as cur:
            cur.execute("SELECT now() + %s * interval '1 second'", [lead])
            t0 = cur.fetchone()[0].isoformat()
            insert_scheduled(
                cur,
                prefix=hook_prefix,
                count=hooks,
                fire_at_sql=f"'{t0}'::timestamptz + (g - 1) * interval '20 milliseconds'",
                bundle=bundle,
            )
            insert_scheduled(
                cur,
                prefix=plain_prefix,
                count=plain,
                fire_at_sql=f"'{t0}'::timestamptz + interval '1 second' + (g - 1) * interval '{step_ms} milliseconds'",
            )
            wait_until(lambda: pending(cur, plain_prefix) == 0, timeout=lead + spread + 120)
            hung = len(receiver.connections)
            lat, unfired, double, fired = lateness_of(cur, plain_prefix)

            def hooks_done() -> bool:
                cur.execute(
                    "SELECT count(*) FROM timers_timer WHERE name LIKE %s AND status IN ('scheduled', 'armed', 'fired')",
                    [hook_prefix + "%"],
                )
                return int(cur.fetchone()[0]) == 0

            # Every hung attempt times out (maxAttempts 1) before the next case starts.
            wait_until(hooks_done, timeout=hooks * timeout_ms / 1000 + 60)
    finally:
        receiver.close()
    return {
        "case": "starvation",
        "system": system,
        "n": plain,
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "max": max(lat, default=float("nan")),
        "lost": unfired,
        "double": double,
        "note": (
            f"timers without actions, due over {spread:g}s beside {hooks} webhooks that never answer "
            f"(timeoutMs {timeout_ms}; {hung} attempts hung by then); target p99 <= 50 ms"
        ),
        "samples": {"lateness_ms": lat, "at": fired},
    }


def run_slowclients(group: Group, free_port: Callable[[], int], *, baseline: bool) -> list[Row]:
    """bench/web_tier.py: the web as make run starts it, then (baseline) the gthread web before it."""
    from bench.web_tier import slowclients_case

    keys = [
        subprocess.run(
            [sys.executable, "manage.py", "create_api_key", f"bench-slow{i}"],
            cwd=ROOT,
            env=ENV,
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
        for i in range(5)
    ]
    configs = [("minoots (gevent, make run)", ["-c", "minoots_project/gunicorn.conf.py"], {})]
    if baseline:
        configs.append(
            (
                "gthread 2x8 (web before)",
                ["-c", "python:minoots_project.gunicorn_conf", "--worker-class", "gthread", "--threads", "8"],
                {"MINOOTS_STREAMS_PER_PROCESS": "4"},
            )
        )
    rows: list[Row] = []
    for system, argv, extra in configs:

        def start_web(env: dict[str, str], argv: list[str] = argv, system: str = system) -> tuple[Any, str]:
            port = free_port()
            proc = group.start(
                f"web-{system.split()[0]}",
                [str(VENV_BIN / "gunicorn"), *argv, "minoots_project.wsgi"],
                ready="Booting worker",
                # INFO: gunicorn says "Booting worker" at INFO (the case then waits for /healthz).
                env={
                    **ENV,
                    "LOG_LEVEL": "INFO",
                    "PORT": str(port),
                    "BIND_HOST": "127.0.0.1",
                    "WEB_CONCURRENCY": "2",
                    **env,
                },
            )
            return proc, f"http://127.0.0.1:{port}"

        rows.extend(
            slowclients_case(
                system=system,
                start_web=start_web,
                stop_web=lambda proc: group.stop_some([proc]),
                extra_env=extra,
                keys=keys,
                pct=pct,
            )
        )
    return rows


# --- main -----------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:,.{digits}f}"
    return str(value)


def print_table(rows: list[Row]) -> None:
    print("\np50 / p99 / max: lateness (fired or arrived minus fireAt); slowclients: response time.")
    print("\n| case | system | n | p50 ms | p99 ms | max ms | lost | double-fired | notes |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        if r["case"].startswith("scale"):
            continue
        print(
            f"| {r['case']} | {r['system']} | {r['n']:,} | {fmt(r['p50'])} | {fmt(r['p99'])} | {fmt(r['max'])} "
            f"| {r['lost']} | {r['double']} | {r.get('note', '')} |"
        )
    scale = [r for r in rows if r["case"].startswith("scale")]
    if scale:
        print(
            "\n| case | loaded (s) | worker RSS MB | Redis used_memory MB | reconcile p99 ms"
            " | GET /api/timers p99 ms | dashboard p99 ms | admin list p99 ms |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in scale:
            print(
                f"| {r['case']} | {r['loaded']:,} ({fmt(r['load_s'])}) | {fmt(r['worker_rss_mb'])}"
                f" | {fmt(r['redis_mb'])} | {fmt(r['reconcile_p99'], 2)} | {fmt(r['list_p99'])}"
                f" | {fmt(r['dashboard_p99'])} | {fmt(r['admin_list_p99'])} |"
            )


def report(rows: list[Row], *, cases: set[str], header: str, plots: Path | None) -> None:
    """The summary table (bench/report.py), last, also written to <plots>/summary.md; the PNGs."""
    from bench.report import markdown, summary, write_plots

    table = markdown(summary(rows, ran=cases))
    if plots is not None:
        try:
            written = write_plots(rows, plots)
        except ImportError as exc:  # matplotlib is in requirements-dev.txt
            print(f"\nno plots: {exc}")
        else:
            (plots / "summary.md").write_text(f"{header}\n\n{table}\n")
            print(f"\nplots and summary.md written to {plots}/: " + ", ".join(p.name for p in written))
    print(f"\nSummary: {header}\n")
    print(table)


def main() -> None:
    from minoots_project.runall import FIRING_CONCURRENCY  # the repository root is on sys.path (above)
    from tests.net import free_port

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="steady,burst,batch,create,scale,webhook,starvation,slowclients")
    parser.add_argument("--quick", action="store_true", help="small sizes: a minute instead of ten")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain Celery comparison")
    parser.add_argument(
        "--plots",
        metavar="DIR",
        type=Path,
        default=ROOT / "bench" / "out",
        help="directory for the PNG plots and summary.md (default bench/out, gitignored)",
    )
    parser.add_argument("--no-plots", action="store_true", help="print the tables only")
    parser.add_argument("--steady-via", default="service", help="service, http or service,http")
    parser.add_argument("--rate", type=int, help="steady: timers per second (default 200)")
    parser.add_argument("--seconds", type=int, help="steady: duration (default 60)")
    parser.add_argument("--batch-total", type=int, help="batch: timers to create (default 100,000)")
    parser.add_argument("--batch-clients", type=int, default=4, help="batch: concurrent clients (default 4)")
    parser.add_argument("--create-seconds", type=float, help="create: seconds per run (default 20)")
    parser.add_argument(
        "--scale-counts", help="scale: pending counts, ascending (default 1000,1000000; --quick 1000,20000)"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="threads per action worker process")
    parser.add_argument("--workers", type=int, default=2, help="action worker processes (one per core is a good start)")
    parser.add_argument(
        "--firing-concurrency",
        type=int,
        default=FIRING_CONCURRENCY,
        help=f"threads of the one firing worker (default {FIRING_CONCURRENCY}, as make run and compose)",
    )
    args = parser.parse_args()
    # SIGTERM (timeout, kill) unwinds like Ctrl-C, so the finally below stops every child group.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cases = set(args.cases.split(","))
    rate, seconds = (50, 10) if args.quick else (200, 60)
    rate = args.rate or rate
    seconds = args.seconds or seconds
    burst = 1000 if args.quick else 10_000
    scale_counts = [1_000, 20_000] if args.quick else [1_000, 1_000_000]
    if args.scale_counts:
        scale_counts = sorted(int(n) for n in args.scale_counts.split(","))

    recreate_database()
    key = (
        subprocess.run(
            [sys.executable, "manage.py", "create_api_key", "bench"],
            cwd=ROOT,
            env=ENV,
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    for url in (BROKER, BASELINE_BROKER):
        redis.Redis.from_url(url).flushdb()

    group = Group()
    rows: list[Row] = []
    try:
        port = free_port()
        group.start(
            "web",
            [
                str(VENV_BIN / "gunicorn"),
                "minoots_project.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "3",
                "--threads",
                "4",
            ],
            ready="Booting worker",
        )
        sizes = {
            "workers": args.workers,
            "concurrency": args.concurrency,
            "firing_concurrency": args.firing_concurrency,
        }
        workers = start_workers(group, topology="split", **sizes)
        group.start(
            "beat",
            [
                str(VENV_BIN / "celery"),
                "-A",
                "minoots_project",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(DATA_DIR / "beat-schedule"),
            ],
            ready="beat: Starting",
        )
        api = f"http://127.0.0.1:{port}"

        def record(label: str, result: tuple[Row, list[float]]) -> None:
            """A case's row; its lateness samples for the plots (the row's own, with when each
            fired, or else the list beside it)."""
            row, lateness = result
            row.setdefault("samples", {"lateness_ms": lateness})
            rows.append(row)

        if "steady" in cases:
            for via in args.steady_via.split(","):
                record(f"steady ({via}): minoots", steady_minoots(api, key, rate, seconds, via=via))
        if "burst" in cases:
            record("burst: minoots", burst_minoots(burst, lead=20))
        if "webhook" in cases:
            record("webhook burst: minoots (arrival)", webhook_case(burst, lead=20))
        if "starvation" in cases:
            starve: dict[str, Any] = {"hooks": 50, "plain": 200, "lead": 20, "timeout_ms": 5000, "spread": 4.0}
            row = starvation_case("minoots", **starve)
            row["note"] = f"firing worker + {args.workers} action workers: {row['note']}"
            rows.append(row)
            if not args.no_baseline:
                group.stop_some(workers)
                workers = start_workers(group, topology="shared", **sizes)
                row = starvation_case("shared worker (old topology)", **starve)
                row["note"] = f"one worker -Q timers,actions, {args.concurrency} threads: {row['note']}"
                rows.append(row)
                group.stop_some(workers)
                workers = start_workers(group, topology="split", **sizes)
        if "batch" in cases:
            batch_api = start_make_run_web(group, free_port, "web-batch")
            record(
                "batch create: minoots",
                batch_case(
                    batch_api,
                    key,
                    total=args.batch_total or (20_000 if args.quick else 100_000),
                    per_request=1000,
                    clients=args.batch_clients,
                    lead=15,
                    web_pid=next(proc.pid for name, proc in reversed(group.procs) if name == "web-batch"),
                ),
            )
        if "create" in cases:
            rows.extend(
                create_case(
                    group,
                    free_port,
                    key,
                    seconds=args.create_seconds or (10 if args.quick else 20),
                    clients=16,
                    rate=200,
                )
            )
        if "scale" in cases:
            rows.extend(scale_case(workers, scale_counts, settle=12, api=api, key=key))
        if "slowclients" in cases:
            rows.extend(run_slowclients(group, free_port, baseline=not args.no_baseline))

        if not args.no_baseline and cases & {"steady", "burst"}:
            group.stop_all()
            for i in range(args.workers):
                group.start(
                    f"baseline-worker{i}",
                    worker_argv("bench.baseline_app", None, args.concurrency),
                    " ready.",
                    env={**ENV, "CELERY_BROKER_URL": BASELINE_BROKER},
                )
            if "steady" in cases:
                record("steady: celery eta", steady_celery(rate, seconds))
            if "burst" in cases:
                record("burst: celery eta", burst_celery(burst, lead=20))
    finally:
        group.stop_all()

    rows.sort(key=lambda r: (r["case"], r["system"] != "minoots"))
    header = (
        f"MINOOTS benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M}Z, {os.cpu_count()} cores, "
        f"1 firing worker (-Q timers, {args.firing_concurrency} threads) + {args.workers} action worker "
        f"process(es) (-Q actions, --pool threads --concurrency {args.concurrency}){' (quick)' if args.quick else ''}"
    )
    print(f"\nPer case: {header}")
    print_table(rows)
    report(rows, cases=cases, header=header, plots=None if args.no_plots else args.plots)


if __name__ == "__main__":
    main()
