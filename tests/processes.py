"""Real worker, beat and web processes for end-to-end tests.

Each process runs in its own session (process group) and is killed as a group when the test
ends, pass or fail, so no stray worker survives to steal the next run's tasks. Output goes to
a log file per process, printed when a test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from django.db import connection

from tests.factories import make_api_key
from tests.net import free_port
from timers.models import Tenant

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CELERY = str(Path(PYTHON).with_name("celery"))


def database_url() -> str:
    """The URL of the database this test session uses (pytest-django's test database)."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    user = s.get("USER") or "postgres"
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{s['NAME']}"


def service_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "SECRET_KEY": settings.SECRET_KEY,
            "MINOOTS_DATA_DIR": str(data_dir),
            "MINOOTS_RECONCILE_INTERVAL": "1s",
            "MINOOTS_REPAIR_GRACE": "1s",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    ready: str | None = None  # the line its log shows once it is ready

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM the group, then SIGKILL whatever is left."""
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return self.popen.returncode

    def kill(self) -> None:
        self.signal_group(signal.SIGKILL)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Processes:
    """Starts project processes; ``stop_all`` kills every group it started."""

    workdir: Path
    env: dict[str, str]
    started: list[Proc] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        ready: str | None = None,
        timeout: float = 30,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> Proc:
        """Start ``argv`` in a session of its own; with ``ready``, wait (unless ``wait`` is
        False: then ``wait_ready`` does) until its log shows that line."""
        log_path = self.workdir / f"{name}-{len(self.started)}.log"
        with open(log_path, "wb") as out:
            popen = subprocess.Popen(
                argv, cwd=ROOT, env=env or self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        proc = Proc(name, popen, log_path, ready)
        self.started.append(proc)
        if ready and wait:
            self.wait_ready(proc, timeout=timeout)
        return proc

    @staticmethod
    def wait_ready(*procs: Proc, timeout: float = 30) -> None:
        """Wait until each of ``procs`` shows its ready line; fail at once if one exits. Processes
        started together with ``wait=False`` boot side by side (the imports of one while another
        waits for Redis or the database) instead of one after the other."""

        def all_ready() -> bool:
            for proc in procs:
                if not proc.alive():
                    raise AssertionError(f"{proc.name} exited early:\n{proc.log()[-3000:]}")
            return all(proc.ready is None or proc.ready in proc.log() for proc in procs)

        names = ", ".join(proc.name for proc in procs)
        wait_for(all_ready, timeout=timeout, what=f"{names} to be ready")

    def worker(
        self,
        name: str = "worker",
        *,
        queues: str = "timers,actions",
        concurrency: int = 8,
        pool: str = "threads",
        extra: list[str] | None = None,
        wait: bool = True,
    ) -> Proc:
        return self.start(
            name,
            [
                CELERY,
                "-A",
                "minoots_project",
                "worker",
                "-Q",
                queues,
                "--pool",
                pool,
                "--concurrency",
                str(concurrency),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"{name}-{len(self.started)}@%h",
                "--loglevel",
                "INFO",
                *(extra or []),
            ],
            ready=" ready.",
            wait=wait,
        )

    def beat(self, name: str = "beat", *, wait: bool = True) -> Proc:
        schedule = self.workdir / f"{name}-{len(self.started)}-schedule"
        return self.start(
            name,
            [CELERY, "-A", "minoots_project", "beat", "--loglevel", "INFO", "--schedule", str(schedule)],
            ready="beat: Starting",
            wait=wait,
        )

    def web(self, name: str = "web", *, wait: bool = True) -> tuple[Proc, str]:
        """gunicorn as ``make run`` starts it (its configuration file: gevent workers), two
        processes, on a free port."""
        port = free_port()
        proc = self.start(
            name,
            [PYTHON, "-m", "gunicorn", "-c", "minoots_project/gunicorn.conf.py", "minoots_project.wsgi"],
            ready="Booting worker",
            env={**self.env, "PORT": str(port), "BIND_HOST": "127.0.0.1", "WEB_CONCURRENCY": "2"},
            wait=wait,
        )
        return proc, f"http://127.0.0.1:{port}"

    @staticmethod
    def wait_answering(web: Proc, base: str, *, timeout: float = 30) -> None:
        """Wait until the web at ``base`` answers /healthz: "Booting worker" comes before its
        workers have loaded the application, which the first request would otherwise wait for."""

        def answering() -> bool:
            if not web.alive():
                raise AssertionError(f"{web.name} exited early:\n{web.log()[-3000:]}")
            try:
                return requests.get(f"{base}/healthz", timeout=5).status_code == 200
            except requests.RequestException:
                return False

        wait_for(answering, timeout=timeout, interval=0.2, what=f"{web.name} to answer /healthz")

    def stack(self, tenant: Tenant) -> tuple[str, dict[str, str]]:
        """Web, a worker and beat, plus an API key of ``tenant``: (base URL, request headers)."""
        raw_key = make_api_key(tenant=tenant, name="e2e")
        web, base = self.web(wait=False)
        self.wait_ready(web, self.worker(wait=False), self.beat(wait=False))
        self.wait_answering(web, base)
        return base, {"X-API-Key": raw_key}

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.kill()


def print_logs_if_failed(request: pytest.FixtureRequest, logs: list[tuple[str, str]]) -> None:
    """After a failed test, print each process's output (the test's own report hides it)."""
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for name, text in logs:
            sys.stderr.write(f"\n----- {name} output -----\n{text[-6000:]}\n")


@pytest.fixture
def processes(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Processes]:
    procs = Processes(workdir=tmp_path, env=service_env(tmp_path / "data"))
    try:
        yield procs
    finally:
        procs.stop_all()
        print_logs_if_failed(request, [(proc.name, proc.log()) for proc in procs.started])
