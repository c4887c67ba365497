"""The real processes bench/faults.py breaks: a private Postgres cluster, a private redis-server,
the stack as ``make run`` runs it (``python -m minoots_project.runall``), a webhook receiver.

Everything here listens on free ports of 127.0.0.1 and lives below one temporary directory; the
shared Postgres (5432) and Redis (6379) are never touched. Every process runs in a process group
of its own and ``kill_everything`` SIGKILLs each group, whatever state the run ended in.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from glob import glob
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg2
import redis
import requests


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def killpg(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (dead, not yet reaped by its parent) counts as dead.
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


# --- Postgres -------------------------------------------------------------------------------


def _pg_bin(name: str) -> str:
    found = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    return shutil.which(name) or name


class PgCluster:
    """A throw-away cluster (initdb, trust auth) on a free port, run as the ``postgres`` user when
    we are root (initdb refuses root). ``pg_ctl`` starts the postmaster in a session of its own,
    so killing its process group takes every backend with it, as a power loss does."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "pg"
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = free_port()
        self.user: str | None = "postgres" if os.geteuid() == 0 else None
        self.dir.mkdir(parents=True)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(workdir, entry.pw_uid, entry.pw_gid)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}"

    def _run(self, argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            user=self.user,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def init(self) -> None:
        self._run([_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        result = self._run(
            [_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options, "start"],
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {result.stdout}{result.stderr}\n{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        self._run([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], check=False)

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is cut, then the server comes back."""
        self.stop("fast")
        self.start()

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        """SIGKILL the postmaster's process group (every backend): a power loss."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        killpg(pid, signal.SIGKILL)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def create_database(self, name: str) -> None:
        conn = psycopg2.connect(f"{self.url}/postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        conn.close()

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""


# --- Redis ----------------------------------------------------------------------------------


class RedisServer:
    """A private redis-server without persistence settings: it comes back empty after a kill; a
    ``SHUTDOWN SAVE`` writes dump.rdb, which the next start loads (it comes back with its data)."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=2)

    def start(self, *, empty: bool = True) -> None:
        if empty:
            (self.dir / "dump.rdb").unlink(missing_ok=True)
        self.starts += 1
        with open(self.dir / "redis.log", "ab") as out:
            self.popen = subprocess.Popen(
                [
                    shutil.which("redis-server") or "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.dir),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while True:
            try:
                with self.client() as c:
                    if c.ping():
                        return
            except redis.RedisError:
                pass
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.popen is not None:
            killpg(self.popen.pid)
            self.popen.wait(10)

    def shutdown(self, *, save: bool) -> None:
        assert self.popen is not None
        try:
            with self.client() as c:
                c.shutdown(save=save, nosave=not save)
        except redis.ConnectionError:
            pass  # the server closed the connection while exiting
        self.popen.wait(15)


# --- the stack (make run) -------------------------------------------------------------------

_STARTED = re.compile(r"(?:started|restarted \(restart \d+\)) (\w+) \(pid (\d+)\)")
_EXITED = re.compile(r"(\w+) exited unexpectedly")


@dataclass
class Stack:
    """``python -m minoots_project.runall`` (what ``make run`` runs after migrate), its output
    appended to one log; the children's pids are read from its ``started … (pid N)`` lines."""

    code: Path
    env: dict[str, str]
    log: Path
    web_port: int
    popen: subprocess.Popen[bytes] | None = None
    seen_pids: set[int] = field(default_factory=set)

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "minoots_project.runall"],
                cwd=self.code,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def pids(self) -> dict[str, int]:
        """The latest pid of each child (the supervisor's latest start of it)."""
        latest: dict[str, int] = {}
        for name, pid in _STARTED.findall(self.text()):
            latest[name] = int(pid)
            self.seen_pids.add(int(pid))
        return latest

    def restarts(self) -> int:
        """Children that died on their own and were restarted by the supervisor so far."""
        return len(_EXITED.findall(self.text()))

    def signal_child(self, name: str, sig: int) -> int:
        pid = self.pids()[name]
        killpg(pid, sig)
        return pid

    def wait_child_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            time.sleep(0.05)
        return not pid_alive(pid)

    def healthy(self) -> bool:
        """runall alive, every child's latest start alive, both workers said ``ready.`` after
        their latest start, and web answers /healthz."""
        if self.popen is None or self.popen.poll() is not None:
            return False
        text = self.text()
        pids = self.pids()
        if set(pids) != {"web", "firing", "worker", "beat"} or not all(pid_alive(p) for p in pids.values()):
            return False
        for name in ("firing", "worker"):
            tail = text[text.rfind(f"{name} (pid {pids[name]})") :]
            if not re.search(rf"^{name}\s+\|.* ready\.", tail, re.MULTILINE):
                return False
        try:
            return requests.get(f"http://127.0.0.1:{self.web_port}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the stack did not become healthy:\n{self.text()[-4000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the supervisor and every child group it ever started (a power loss)."""
        self.pids()
        if self.popen is not None:
            killpg(self.popen.pid)
        for pid in self.seen_pids:
            killpg(pid)
        if self.popen is not None:
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass


# --- webhook receiver -----------------------------------------------------------------------


@dataclass
class Delivery:
    fault: str
    webhook_id: str
    timer_id: str
    status: int  # the answer sent; 0 until it is
    at: float


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a sender killed mid-request resets its connection: expected here


class Receiver:
    """Records every delivery's ``webhook-id``. The path says how to answer:
    ``/<fault>/ok``, ``/<fault>/slow/<seconds>``, ``/<fault>/fail`` (500 always),
    ``/<fault>/flaky/<k>`` (503 for the first k attempts of each webhook-id, then 204)."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                parts = self.path.strip("/").split("/")
                fault, mode = parts[0], parts[1] if len(parts) > 1 else "ok"
                arg = parts[2] if len(parts) > 2 else ""
                webhook_id = self.headers.get("webhook-id", "")
                # Recorded on arrival: a sender that gives up (its timeoutMs) or dies still delivered.
                delivery = Delivery(fault, webhook_id, self.headers.get("x-minoots-timer-id", ""), 0, time.time())
                with receiver.lock:
                    seen = sum(1 for d in receiver.deliveries if d.webhook_id == webhook_id)
                    receiver.deliveries.append(delivery)
                status = 204
                if mode == "slow":
                    time.sleep(float(arg or 1))
                elif mode == "fail":
                    status = 500
                elif mode == "flaky":
                    status = 503 if seen < int(arg or 2) else 204
                delivery.status = status
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 1024
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True, name="receiver").start()

    def url(self, fault: str, mode: str = "ok", arg: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{fault}/{mode}" + (f"/{arg}" if arg else "")

    def of(self, fault: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.fault == fault]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- database access that survives the faults ----------------------------------------------


class Db:
    """Autocommit queries against the private cluster that reconnect and retry (for up to
    ``patience`` seconds) while Postgres is down or restarting."""

    def __init__(self, dsn: str, patience: float = 90) -> None:
        self.dsn = dsn
        self.patience = patience
        self.conn: Any = None

    def run(self, work: Callable[[Any], Any]) -> Any:
        deadline = time.monotonic() + self.patience
        while True:
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = psycopg2.connect(self.dsn, connect_timeout=3)
                    self.conn.autocommit = True
                with self.conn.cursor() as cur:
                    return work(cur)
            except psycopg2.Error:
                try:
                    if self.conn is not None:
                        self.conn.close()
                except psycopg2.Error:
                    pass
                self.conn = None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        def work(cur: Any) -> list[tuple[Any, ...]]:
            cur.execute(sql, params)
            return list(cur.fetchall())

        result: list[tuple[Any, ...]] = self.run(work)
        return result

    def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.rows(sql, params)[0][0]

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg2.Error:
                pass
