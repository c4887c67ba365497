"""The web tier under slow and idle clients (issue 9 item 4), with gunicorn as ``make run``
starts it (its configuration file: gevent workers).

Each test runs a real gunicorn and real sockets: clients that drip their headers or their body,
open event streams, and a row lock that keeps a request inside the database.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import pytest
import requests

from tests.factories import make_api_key, make_tenant
from tests.processes import PYTHON, Processes, database_url, free_port
from timers.models import StreamLease, Tenant

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def start_web(processes: Processes, **env: str) -> str:
    port = free_port()
    processes.start(
        "web",
        [PYTHON, "-m", "gunicorn", "-c", "minoots_project/gunicorn.conf.py", "minoots_project.wsgi"],
        env={**processes.env, "PORT": str(port), "BIND_HOST": "127.0.0.1", "WEB_CONCURRENCY": "2", **env},
        ready="Booting worker",
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:  # "Booting worker" comes before the application is loaded
        try:
            if requests.get(f"{base}/healthz", timeout=5).status_code == 200:
                return base
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "web did not answer /healthz"
        time.sleep(0.2)


class Dripper:
    """``count`` connections that send a request head one header line every ``interval`` s and
    never finish it (slowloris), or, with ``body``, a complete head and then one body byte per
    interval."""

    def __init__(self, base: str, count: int, *, interval: float, body: bytes | None = None, key: str = "") -> None:
        host, port = base.removeprefix("http://").split(":")
        self.body = body
        self.sockets = []
        for _ in range(count):
            sock = socket.create_connection((host, int(port)), timeout=5)
            if body is None:
                sock.sendall(b"GET /api/timers HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            else:
                sock.sendall(
                    b"POST /api/timers HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"X-API-Key: " + key.encode() + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
                )
            self.sockets.append(sock)
        self.interval = interval
        self.stop = threading.Event()
        self.closed_after: dict[int, float] = {}
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._drip, daemon=True)
        self.thread.start()

    def _drip(self) -> None:
        sent = 0
        while not self.stop.wait(self.interval):
            for index, sock in enumerate(self.sockets):
                if index in self.closed_after:
                    continue
                chunk = b"X-Slow: 1\r\n" if self.body is None else self.body[sent : sent + 1]
                try:
                    sock.sendall(chunk or b" ")
                except OSError:
                    self.closed_after[index] = time.monotonic() - self.started
            sent += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for sock in self.sockets:
            sock.close()


@contextmanager
def dripping(base: str, count: int, **kwargs: Any) -> Iterator[Dripper]:
    dripper = Dripper(base, count, **kwargs)
    try:
        yield dripper
    finally:
        dripper.close()


def create(base: str, key: str, session: requests.Session | None = None) -> requests.Response:
    return (session or requests).post(
        f"{base}/api/timers", json={"name": "t", "duration": "1h"}, headers={"X-API-Key": key}, timeout=10
    )


def test_slow_clients_leave_healthz_and_creates_answering(processes: Processes, tenant: Tenant) -> None:
    """120 connections dripping header lines, more than the 2 x 8 request threads the web had
    before gevent workers: /healthz and creates still answer at once (they timed out then)."""
    key = make_api_key(tenant=tenant)
    base = start_web(processes)
    with dripping(base, 120, interval=1.0):
        time.sleep(1.5)  # every slow connection is inside the server, its head half sent
        session = requests.Session()
        for _ in range(10):
            started = time.monotonic()
            assert requests.get(f"{base}/healthz", timeout=3).status_code == 200
            assert create(base, key, session).status_code == 201
            assert time.monotonic() - started < 2.0


def test_a_connection_that_drips_its_headers_is_closed_after_the_keepalive_limit(
    processes: Processes, tenant: Tenant
) -> None:
    base = start_web(processes, GUNICORN_KEEPALIVE="2")
    with dripping(base, 5, interval=0.5) as dripper:
        deadline = time.monotonic() + 10
        while len(dripper.closed_after) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        # Closed by the server about 2 s in (the first failed send notices it), not left open.
        assert len(dripper.closed_after) == 5, dripper.closed_after
        assert max(dripper.closed_after.values()) < 6


@pytest.mark.postgres_only("the pool of Postgres connections per web process")
def test_a_client_dripping_its_body_holds_no_database_connection_and_gets_a_408(
    processes: Processes, tenant: Tenant
) -> None:
    """One web process lending 2 connections, 6 clients dripping their bodies: other creates
    go through meanwhile, and each slow client is answered 408 at the body deadline."""
    key = make_api_key(tenant=tenant)
    base = start_web(processes, WEB_CONCURRENCY="1", MINOOTS_WEB_DB_CONNECTIONS="2", MINOOTS_REQUEST_BODY_SECONDS="3")
    body = b'{"name": "slow", "duration": "1h"}'
    with dripping(base, 6, interval=0.5, body=body, key=key) as dripper:
        time.sleep(1.0)
        for _ in range(5):
            assert create(base, key).status_code == 201
        answers = []
        for sock in dripper.sockets:
            sock.settimeout(10)
            answers.append(sock.recv(200).split(b"\r\n", 1)[0])
    assert answers == [b"HTTP/1.1 408 Request Timeout"] * 6


@pytest.mark.postgres_only("the pool of Postgres connections per web process")
def test_a_request_waiting_for_a_pooled_connection_gets_a_503_after_the_wait_limit(
    processes: Processes, tenant: Tenant
) -> None:
    """The only pooled connection is stuck behind a row lock: the next request that needs the
    database is a 503 with Retry-After after MINOOTS_WEB_DB_WAIT, not a hung client."""
    key = make_api_key(tenant=tenant)
    base = start_web(
        processes,
        WEB_CONCURRENCY="1",
        MINOOTS_WEB_DB_CONNECTIONS="1",
        MINOOTS_WEB_DB_WAIT="1",
        MINOOTS_STREAM_MAX_SECONDS="1",
    )
    assert create(base, key).status_code == 201  # the pool's one connection exists
    locker = psycopg2.connect(database_url())
    try:
        with locker.cursor() as cur:
            cur.execute("SELECT id FROM timers_tenant WHERE id = %s FOR UPDATE", [tenant.id])
            # Opening a stream counts the tenant's streams under that row's lock: it waits,
            # holding the pooled connection.
            stuck = threading.Thread(
                target=lambda: requests.get(f"{base}/api/timers/stream", headers={"X-API-Key": key}, timeout=20)
            )
            stuck.start()
            time.sleep(0.5)
            started = time.monotonic()
            response = requests.get(f"{base}/api/timers", headers={"X-API-Key": key}, timeout=10)
            waited = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert response.json()["message"] == "Database unavailable; retry shortly"
        assert response.headers["Retry-After"] == "5"
        assert 0.9 <= waited < 3
    finally:
        locker.rollback()
        locker.close()
    stuck.join(timeout=20)
    assert requests.get(f"{base}/api/timers", headers={"X-API-Key": key}, timeout=10).status_code == 200


def open_stream(base: str, key: str) -> requests.Response:
    return requests.get(
        f"{base}/api/timers/stream", headers={"X-API-Key": key, "Accept": "text/event-stream"}, stream=True, timeout=10
    )


def test_a_tenants_streams_are_capped_over_every_web_process(processes: Processes, tenant: Tenant) -> None:
    """Two web processes, a cap of 3 per tenant: acme's 4th stream is a 429 whichever process
    serves it, globex still gets one, and a closed stream frees its place."""
    globex = make_tenant(id="globex")
    acme_key, globex_key = make_api_key(tenant=tenant), make_api_key(tenant=globex)
    base = start_web(processes, MINOOTS_STREAMS_PER_TENANT="3", MINOOTS_STREAM_MAX_SECONDS="60")
    opened = [open_stream(base, acme_key) for _ in range(3)]
    try:
        assert [r.status_code for r in opened] == [200, 200, 200]
        assert StreamLease.objects.filter(tenant=tenant).count() == 3
        refused = [open_stream(base, acme_key) for _ in range(4)]  # several tries: both processes
        assert [r.status_code for r in refused] == [429] * 4
        assert refused[0].headers["Retry-After"] == "5"
        assert "already has 3 open event streams" in refused[0].text  # an SSE "error" event here

        theirs = open_stream(base, globex_key)
        assert theirs.status_code == 200
        theirs.close()

        opened.pop().close()
        deadline = time.monotonic() + 10  # the server notices the closed connection at its next write
        while StreamLease.objects.filter(tenant=tenant).count() > 2:
            assert time.monotonic() < deadline, "the closed stream kept its lease"
            time.sleep(0.2)
        again = open_stream(base, acme_key)
        assert again.status_code == 200
        opened.append(again)
    finally:
        for response in opened:
            response.close()


@pytest.mark.postgres_only("the pool of Postgres connections per web process")
def test_open_streams_hold_no_database_connection_and_still_deliver(processes: Processes, tenant: Tenant) -> None:
    """20 open streams on one web process lending 2 connections: creates go through, and
    every stream receives the created events."""
    key = make_api_key(tenant=tenant)
    base = start_web(
        processes,
        WEB_CONCURRENCY="1",
        MINOOTS_WEB_DB_CONNECTIONS="2",
        MINOOTS_STREAMS_PER_TENANT="50",
        MINOOTS_STREAM_MAX_SECONDS="60",
    )
    streams = [open_stream(base, key) for _ in range(20)]
    try:
        assert {r.status_code for r in streams} == {200}
        time.sleep(1.0)
        created = [create(base, key) for _ in range(3)]
        assert [r.status_code for r in created] == [201] * 3
        ids = {r.json()["id"] for r in created}
        for response in streams:
            seen: set[str] = set()
            lines = response.iter_lines(decode_unicode=True)
            deadline = time.monotonic() + 10
            while seen != ids:
                assert time.monotonic() < deadline, f"stream saw {seen} of {ids}"
                line = next(lines)
                for timer_id in ids:
                    if line.startswith("data: ") and timer_id in line:
                        seen.add(timer_id)
    finally:
        for response in streams:
            response.close()
