"""The web tier's concurrent writes on every database, SQLite (the embedded default) included.

gevent web workers run many requests in one process. SQLite makes a writer wait for another
connection's write lock inside the C library, where gevent cannot switch greenlets: a greenlet
waiting there froze its whole process, including the greenlet holding the lock, so two creates
in one web process deadlocked until SQLite's busy timeout (30 s) and both got a 503. These tests
send concurrent writes through a real gunicorn and expect every one answered promptly.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.factories import make_api_key
from tests.ops.test_web_tier import start_web
from tests.processes import Processes
from timers.models import Tenant, Timer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def test_concurrent_creates_in_one_web_process_are_all_answered_promptly(processes: Processes, tenant: Tenant) -> None:
    base = start_web(processes, WEB_CONCURRENCY="1")
    key = make_api_key(tenant=tenant, name="writes")
    session_count = 12

    def create_many(worker: int) -> list[tuple[int, float]]:
        session = requests.Session()
        answers = []
        for n in range(8):
            started = time.monotonic()
            response = session.post(
                f"{base}/api/timers",
                json={"name": f"w{worker}-{n}", "duration": "1h", "metadata": {"n": n}},
                headers={"X-API-Key": key},
                timeout=60,
            )
            answers.append((response.status_code, time.monotonic() - started))
        return answers

    with ThreadPoolExecutor(session_count) as pool:
        results = [answer for answers in pool.map(create_many, range(session_count)) for answer in answers]

    statuses = sorted({status for status, _ in results})
    slowest = max(seconds for _, seconds in results)
    assert statuses == [201], f"statuses {statuses}"
    assert slowest < 5, f"the slowest create took {slowest:.1f} s"
    assert Timer.objects.filter(tenant=tenant).count() == session_count * 8
