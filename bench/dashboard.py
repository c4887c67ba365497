"""The admin dashboard with a million timers: how long the page takes to render.

Usage (from the repository root, with .venv and the local Postgres and Redis running):

    .venv/bin/python bench/dashboard.py                 # 1,000,000 timers, 20 renders
    .venv/bin/python bench/dashboard.py --timers 100000 --renders 50
    .venv/bin/python bench/dashboard.py --timers 100000 --recent-fires 720000   # a busy hour: 200 fires/s

It re-creates its own Postgres database (``minoots_bench_dashboard``), migrates it, inserts
the timers with one ``INSERT ... SELECT FROM generate_series`` (10 tenants; 45 % scheduled
over the next 30 days, 40 % settled, 5 % failed and 5 % cancelled over the last 7 days, the
rest armed within the horizon, some of them overdue), 10,000 failed and 1,000 retrying action
runs, runs ANALYZE, then renders ``/admin/`` as a superuser through Django's test client
(the whole view: every query, the template, the SVG chart; the broker ping against Redis
db 12, no worker, so the 1 s worker ping happens on the first render only and is then cached
for 10 s as in production). It prints p50 / p99 of the renders for every tenant and for one
tenant, and the first (cold) render, then the same for the timer list.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
DB_NAME = os.environ.get("BENCH_DB", "minoots_bench_dashboard")
BROKER = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/12")

INSERT_TIMERS = """
INSERT INTO timers_timer (id, tenant_id, name, status, duration_ms, created_at, fire_at, requested_by, metadata,
    labels, fired_at, lateness_ms, settled_at, cancelled_at, cancel_reason, cancelled_by, failure_reason,
    state_version, request_hash)
SELECT gen_random_uuid(), 't' || (i %% 10), 'timer-' || i, s.status, 60000, s.fire_at - interval '1 minute', s.fire_at,
    '', '{}', json_build_object('team', 'team' || (i %% 50))::jsonb,
    CASE WHEN s.status IN ('settled', 'failed') THEN s.fire_at + s.late END,
    CASE WHEN s.status IN ('settled', 'failed') THEN (extract(epoch FROM s.late) * 1000)::bigint END,
    CASE WHEN s.status IN ('settled', 'failed') THEN s.fire_at + s.late + interval '20 ms' END,
    CASE WHEN s.status = 'cancelled' THEN s.fire_at - interval '30 s' END,
    '', '', CASE WHEN s.status = 'failed' THEN 'actions failed: hook' ELSE '' END, 3, ''
FROM generate_series(1::bigint, %(n)s::bigint) AS i,
LATERAL (SELECT
    CASE WHEN i %% 100 < 45 THEN 'scheduled' WHEN i %% 100 < 85 THEN 'settled' WHEN i %% 100 < 90 THEN 'failed'
         WHEN i %% 100 < 95 THEN 'cancelled' ELSE 'armed' END AS status,
    CASE WHEN i %% 100 < 45 THEN now() + (i %% 2592000) * interval '1 s' + interval '2 min'
         WHEN i %% 100 < 95 THEN now() - (i %% 604800) * interval '1 s'
         WHEN i %% 1000 = 999 THEN now() - interval '90 s'
         ELSE now() + interval '2 min' + (i %% 60) * interval '1 s' END AS fire_at,
    ((i * 7919) %% 40 + CASE WHEN i %% 97 = 0 THEN 1500 ELSE 0 END) * interval '1 ms' AS late
) AS s
"""

INSERT_RUNS = """
INSERT INTO actions_actionrun (id, timer_id, action_id, kind, parameters, position, escalation_level, status,
    attempts, retry_base, next_attempt_at, last_error, result_summary, created_at, finished_at, worker)
SELECT gen_random_uuid(), t.id, 'hook', 'webhook', '{}', 0, 0,
    CASE WHEN t.status = 'failed' THEN 'failed' ELSE 'pending' END,
    CASE WHEN t.status = 'failed' THEN 3 ELSE 1 END, 0,
    CASE WHEN t.status = 'failed' THEN NULL ELSE now() + interval '30 s' END,
    'HTTP 503 from the receiver', '', t.fired_at, CASE WHEN t.status = 'failed' THEN t.settled_at END, ''
FROM (
    (SELECT id, status, fired_at, settled_at FROM timers_timer WHERE status = 'failed' LIMIT 10000)
    UNION ALL
    (SELECT id, status, fired_at, settled_at FROM timers_timer WHERE status = 'settled' LIMIT 1000)
) AS t
"""


# Settled timers fired over the last hour (the window the dashboard's lateness reads), lateness
# 0-39 ms with a tail.
INSERT_RECENT_FIRES = """
INSERT INTO timers_timer (id, tenant_id, name, status, duration_ms, created_at, fire_at, requested_by, metadata,
    labels, fired_at, lateness_ms, settled_at, cancelled_at, cancel_reason, cancelled_by, failure_reason,
    state_version, request_hash)
SELECT gen_random_uuid(), 't' || (i %% 10), 'recent-' || i, 'settled', 60000, f.at - interval '1 minute', f.at,
    '', '{}', '{}', f.at + f.late, (extract(epoch FROM f.late) * 1000)::bigint, f.at + f.late + interval '5 ms',
    NULL, '', '', '', 4, ''
FROM generate_series(1::bigint, %(n)s::bigint) AS i,
LATERAL (SELECT now() - interval '59 min 59 s' + (i * interval '3599 s') / greatest(%(n)s, 1) AS at,
                ((i * 7919) %% 40 + CASE WHEN i %% 97 = 0 THEN 900 ELSE 0 END) * interval '1 ms' AS late) AS f
"""


def recreate_database() -> None:
    conn = psycopg2.connect(f"{PG}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
        cur.execute(f"CREATE DATABASE {DB_NAME}")
    conn.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


def timed(client: object, url: str, renders: int) -> tuple[float, list[float]]:
    """(first render ms, the next ``renders`` in ms)."""
    times = []
    for _ in range(renders + 1):
        started = time.perf_counter()
        response = client.get(url)  # type: ignore[attr-defined]
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return times[0], times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timers", type=int, default=1_000_000)
    parser.add_argument("--renders", type=int, default=20)
    parser.add_argument(
        "--recent-fires", type=int, default=0, help="timers more, fired over the last hour (200/s is 720,000)"
    )
    args = parser.parse_args()

    recreate_database()
    os.environ.update(
        {
            "DATABASE_URL": f"{PG}/{DB_NAME}",
            "CELERY_BROKER_URL": BROKER,
            "SECRET_KEY": "bench-only-secret",
            "MINOOTS_DATA_DIR": str(ROOT / ".data" / "bench-dashboard"),
            "ALLOWED_HOSTS": "testserver,localhost",
            "LOG_LEVEL": "WARNING",
        }
    )
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "minoots_project.settings"
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.cache import cache
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    call_command("migrate", verbosity=0)
    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO timers_tenant (id, name, webhook_secret, previous_webhook_secret, max_active_timers,"
            " max_creates_per_day, allowed_action_kinds, created_at)"
            " SELECT 't' || i, 'Tenant ' || i, 'whsec_x', '', 1000000, 1000000, '[]', now() FROM generate_series(0, 9) i"
        )
        started = time.perf_counter()
        cur.execute(INSERT_TIMERS, {"n": args.timers})
        cur.execute(INSERT_RUNS)
        cur.execute(INSERT_RECENT_FIRES, {"n": args.recent_fires})
        inserted = time.perf_counter() - started
        cur.execute("ANALYZE")
        cur.execute("SELECT count(*) FROM timers_timer")
        (count,) = cur.fetchone()
    print(f"{count:,} timers and their runs inserted in {inserted:.1f} s")

    cache.clear()
    user = get_user_model().objects.create_superuser("bench", "bench@example.com", "unused-password")
    client = Client()
    client.force_login(user)
    print(f"renders of {args.renders} (after a first, cold one), Postgres {connection.pg_version // 10000}:")
    for label, url in (
        ("dashboard, every tenant", "/admin/"),
        ("dashboard, ?tenant=t3", "/admin/?tenant=t3"),
        ("timer list", "/admin/timers/timer/"),
        ("timer list, status=failed", "/admin/timers/timer/?status__exact=failed"),
    ):
        first, times = timed(client, url, args.renders)
        print(
            f"  {label:<28} p50 {statistics.median(times):7.1f} ms   p99 {percentile(times, 0.99):7.1f} ms"
            f"   first {first:7.1f} ms"
        )


if __name__ == "__main__":
    main()
