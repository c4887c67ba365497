"""The ``slowclients`` case of bench/timers.py: the web tier under slow and idle clients.

200 slowloris connections (each sends a request head one header line a second and never
finishes it; one closed by the server is opened again at once, as an attacker would) and 50
open event streams (5 tenants x 10, the per-tenant cap) against one web server, while a probe
measures ``GET /healthz`` (a new connection each time, as a load balancer's health check) and
``POST /api/timers`` (keep-alive), 20 of each a second for 10 s. Side by side: the web as ``make run`` starts it
(gunicorn's configuration file: 2 gevent worker processes) and the web before it (the same
gunicorn settings with 2 x 8 gthread threads and 4 streams per process).
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

Row = dict[str, Any]
TIMEOUT = 5.0


class Slowloris:
    """``count`` connections kept half-open: a header line a second, never the blank line."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.sockets: list[socket.socket | None] = [None] * count
        self.reopened = 0
        self.stop = threading.Event()
        for index in range(count):
            self._open(index)
        self.thread = threading.Thread(target=self._drip, daemon=True)
        self.thread.start()

    def _open(self, index: int) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.sendall(b"GET /api/timers HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            self.sockets[index] = sock
        except OSError:
            self.sockets[index] = None

    def _drip(self) -> None:
        while not self.stop.wait(1.0):
            for index, sock in enumerate(self.sockets):
                try:
                    if sock is None:
                        raise OSError
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    if sock is not None:
                        sock.close()
                    self.reopened += 1
                    self._open(index)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for sock in self.sockets:
            if sock is not None:
                sock.close()


class Streams:
    """Event streams held open and read, one thread each; ``status`` counts their answers."""

    def __init__(self, api: str, keys: list[str], per_key: int) -> None:
        self.status: dict[int, int] = {}
        self.responses: list[requests.Response] = []
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._hold, args=(api, key), daemon=True) for key in keys for _ in range(per_key)
        ]
        for thread in self.threads:
            thread.start()

    def _hold(self, api: str, key: str) -> None:
        try:
            response = requests.get(
                f"{api}/api/timers/stream",
                headers={"X-API-Key": key, "Accept": "text/event-stream"},
                stream=True,
                timeout=TIMEOUT,
            )
        except requests.RequestException:
            code = 0
        else:
            code = response.status_code
            with self.lock:
                self.responses.append(response)
        with self.lock:
            self.status[code] = self.status.get(code, 0) + 1
        if code == 200:
            try:
                for _ in response.iter_lines():
                    pass
            except (requests.RequestException, AttributeError, ValueError):
                pass  # closed at the end of the case

    def close(self) -> None:
        with self.lock:
            for response in self.responses:
                response.close()


def timed(call: Callable[[], int]) -> tuple[float, bool]:
    started = time.monotonic()
    try:
        ok = call() in (200, 201)
    except requests.RequestException:
        ok = False
    elapsed = time.monotonic() - started
    return (elapsed if ok else max(elapsed, TIMEOUT)) * 1000, ok


def probe(api: str, key: str, seconds: float, rate: float) -> tuple[list[float], list[float], int]:
    """A health check and a create every 1/``rate`` s for ``seconds`` (up to 64 in flight, so
    a slow answer does not delay the next probe): (healthz ms, create ms, failures); a failed
    or timed-out request counts as TIMEOUT."""
    sessions = threading.local()
    healthz: list[float] = []
    creates: list[float] = []
    failures = 0
    lock = threading.Lock()

    def session() -> requests.Session:
        if not hasattr(sessions, "s"):
            sessions.s = requests.Session()
        return sessions.s  # type: ignore[no-any-return]

    def check_health() -> None:
        nonlocal failures
        value, ok = timed(lambda: requests.get(f"{api}/healthz", timeout=TIMEOUT).status_code)
        with lock:
            healthz.append(value)
            failures += not ok

    def create(i: int) -> None:
        nonlocal failures
        value, ok = timed(
            lambda: (
                session()
                .post(
                    f"{api}/api/timers",
                    json={"name": f"slowclients-{i}", "duration": "1h"},
                    headers={"X-API-Key": key},
                    timeout=TIMEOUT,
                )
                .status_code
            )
        )
        with lock:
            creates.append(value)
            failures += not ok

    start = time.monotonic()
    with ThreadPoolExecutor(64) as pool:
        for i in range(int(seconds * rate)):
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
            pool.submit(check_health)
            pool.submit(create, i)
    return healthz, creates, failures


def slowclients_case(
    *,
    system: str,
    start_web: Callable[[dict[str, str]], tuple[subprocess.Popen[bytes], str]],
    stop_web: Callable[[subprocess.Popen[bytes]], None],
    extra_env: dict[str, str],
    keys: list[str],
    pct: Callable[[list[float], float], float],
    slow: int = 200,
    streams: int = 50,
    seconds: float = 10.0,
    rate: float = 20.0,
) -> list[Row]:
    proc, api = start_web(extra_env)
    port = int(api.rsplit(":", 1)[1])
    loris = stream_set = None
    try:
        deadline = time.monotonic() + 30
        while True:  # gunicorn says "Booting worker" before the application is loaded
            try:
                if requests.get(f"{api}/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{system}: web did not answer /healthz")
            time.sleep(0.2)
        loris = Slowloris(port, slow)
        stream_set = Streams(api, keys, streams // len(keys))
        time.sleep(3.0)  # every slow connection and stream is open
        healthz, creates, failures = probe(api, keys[0], seconds, rate)
        opened = stream_set.status.get(200, 0)
        refused = sum(n for code, n in stream_set.status.items() if code != 200)
    finally:
        if loris is not None:
            loris.close()
        if stream_set is not None:
            stream_set.close()
        stop_web(proc)
    note = (
        f"{slow} slowloris connections (re-opened {loris.reopened if loris else 0}x after the server "
        f"closed them), {opened} streams open ({refused} refused); {failures} probe requests failed "
        "or timed out (counted as 5 s); target p99 <= 200 ms"
    )
    rows = []
    for name, values in (("slowclients /healthz", healthz), ("slowclients create", creates)):
        rows.append(
            {
                "case": name,
                "system": system,
                "n": len(values),
                "p50": pct(values, 50),
                "p99": pct(values, 99),
                "max": max(values, default=float("nan")),
                "lost": "",
                "double": "",
                "note": note,
            }
        )
    return rows
