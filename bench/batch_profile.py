"""Where one POST /api/timers/batch of 1,000 timers (or one POST /api/timers) spends its time, in this process.

Usage (from the repository root):

    .venv/bin/python bench/batch_profile.py --requests 20            # figures per 1,000 timers
    .venv/bin/python bench/batch_profile.py --requests 5 --profile   # + cProfile's top functions
    .venv/bin/python bench/batch_profile.py --single --requests 500  # one POST /api/timers each

The request goes through the whole Django stack (middleware, authentication, DRF) with
Django's test client, against the local Postgres (``BENCH_DB``, default minoots_prof_batch,
migrated here) and Redis (``BENCH_BROKER``); the bodies are the bench's batch case's (timers
due 15-25 s after they are sent, so each batch arms them and publishes the ticks of the
buckets not seen before). It prints, per request: wall ms, this process's CPU ms, the CPU ms
of its Postgres backend (the server is on this machine), the SQL statements and the ms spent
waiting on them, and the ticks published.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
DB_NAME = os.environ.get("BENCH_DB", "minoots_prof_batch")
BROKER = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/13")


def _setup() -> None:
    os.environ.update(
        {
            "DATABASE_URL": f"{PG}/{DB_NAME}",
            "CELERY_BROKER_URL": BROKER,
            "SECRET_KEY": "bench-only-secret",
            "MINOOTS_DATA_DIR": os.environ.get("BENCH_DATA_DIR", "/tmp/batch-bench"),
            "MINOOTS_DEFAULT_MAX_ACTIVE_TIMERS": "100000000",
            "MINOOTS_DEFAULT_MAX_CREATES_PER_DAY": "100000000",
            "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "minoots_project.settings",
        }
    )
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    import psycopg2

    conn = psycopg2.connect(f"{PG}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME])
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{DB_NAME}"')
    conn.close()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _body(per_request: int, lead: float, spread: float, *, single: bool = False) -> bytes:
    sent = datetime.now(UTC)
    if single:  # the bench's create case's body (bench/timers.py _create_body)
        fire_at = sent + timedelta(seconds=lead + random.uniform(0, spread))
        return json.dumps({"name": "prof", "fireAt": fire_at.isoformat(timespec="milliseconds")}).encode()
    timers = [
        {
            "name": f"prof-{i}",
            "fireAt": (sent + timedelta(seconds=lead + random.uniform(0, spread))).isoformat(timespec="milliseconds"),
        }
        for i in range(per_request)
    ]
    return json.dumps({"timers": timers}).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--per-request", type=int, default=1000)
    parser.add_argument("--lead", type=float, default=15.0, help="first fireAt, seconds after sending")
    parser.add_argument("--spread", type=float, default=10.0, help="fireAts over this many seconds")
    parser.add_argument("--profile", action="store_true", help="cProfile the requests after the first")
    parser.add_argument("--pyinstrument", action="store_true", help="pyinstrument the requests after the first")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--cpu", action="store_true", help="with --profile: CPU time instead of wall time")
    parser.add_argument("--single", action="store_true", help="POST /api/timers, one timer a request")
    args = parser.parse_args()
    _setup()

    from django.db import connection
    from django.test import Client

    from timers import ticks
    from timers.keys import api_key_create
    from timers.models import Tenant, Timer

    tenant, _ = Tenant.objects.get_or_create(pk="prof", defaults={"name": "Prof"})
    _, raw = api_key_create(tenant=tenant, name="prof")
    client = Client(HTTP_X_API_KEY=raw, HTTP_HOST="127.0.0.1")

    published = 0
    real_publish = ticks.publish_tick

    def counting_publish(**kwargs: Any) -> bool:
        nonlocal published
        published += 1
        return real_publish(**kwargs)

    ticks.publish_tick = counting_publish  # type: ignore[assignment]
    real_mark_and_push = ticks._mark_and_push

    def counting_mark_and_push(buckets: list[int], **kwargs: Any) -> list[int] | None:
        nonlocal published
        pushed = real_mark_and_push(buckets, **kwargs)
        published += len(pushed or ())
        return pushed

    ticks._mark_and_push = counting_mark_and_push  # type: ignore[assignment]
    sql = {"n": 0, "s": 0.0}

    def timing(execute: Callable[..., Any], query: str, params: Any, many: bool, context: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return execute(query, params, many, context)
        finally:
            sql["n"] += 1
            sql["s"] += time.perf_counter() - t0

    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        backend = Path(f"/proc/{cur.fetchone()[0]}/schedstat")

    def backend_ms() -> float:
        # The first field: nanoseconds this Postgres backend spent on a CPU (same machine).
        return int(backend.read_text().split()[0]) / 1e6 if backend.exists() else float("nan")

    # --cpu: cProfile counts this process's CPU time, so waits on Postgres and Redis count for nothing.
    profiler = (cProfile.Profile(time.process_time) if args.cpu else cProfile.Profile()) if args.profile else None
    sampler = None
    if args.pyinstrument:
        from pyinstrument import Profiler

        sampler = Profiler(interval=0.0002)
    rows = []
    with connection.execute_wrapper(timing):
        for i in range(args.requests):
            body = _body(args.per_request, args.lead, args.spread, single=args.single)
            sql["n"], sql["s"], published = 0, 0.0, 0
            if profiler is not None and i > 0:
                profiler.enable()
            if sampler is not None and i > 0:
                sampler.start()
            w0, c0, p0 = time.perf_counter(), time.process_time(), backend_ms()
            path = "/api/timers" if args.single else "/api/timers/batch"
            response = client.post(path, data=body, content_type="application/json")
            wall, cpu, pg = time.perf_counter() - w0, time.process_time() - c0, backend_ms() - p0
            if profiler is not None:
                profiler.disable()
            if sampler is not None and i > 0:
                sampler.stop()
            if args.single:
                assert response.status_code == 201, response.content[:500]
            else:
                assert response.status_code == 200, response.content[:500]
                statuses = {r["status"] for r in json.loads(response.content)["results"]}
                assert statuses == {201}, statuses
            rows.append((wall * 1000, cpu * 1000, pg, sql["n"], sql["s"] * 1000, published))
            if args.requests > 50 and i % 100:
                continue  # many small requests: every hundredth, then the medians
            print(
                f"request {i:3d}: wall {wall * 1000:7.1f} ms  cpu {cpu * 1000:7.1f} ms  postgres cpu {pg:6.1f} ms  "
                f"sql {sql['n']:3d} statements {sql['s'] * 1000:6.1f} ms  ticks published {published}",
                flush=True,
            )
    steady = rows[1:] or rows
    med = [sorted(col)[len(col) // 2] for col in zip(*steady, strict=True)]
    print(
        f"median of requests 1..{len(rows) - 1}: wall {med[0]:.1f} ms, cpu {med[1]:.1f} ms, "
        f"postgres cpu {med[2]:.1f} ms, {med[3]:.0f} statements {med[4]:.1f} ms, ticks published {med[5]:.0f}"
    )
    if profiler is not None:
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(args.top)
    if sampler is not None:
        print(sampler.output_text(color=False, show_all=False, timeline=False))
    deleted = Timer.objects.filter(tenant=tenant).delete()
    print("cleaned up", deleted[0], "rows")


if __name__ == "__main__":
    main()
