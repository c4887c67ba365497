"""A private redis-server for fault tests: killed, shut down and restarted at will.

It listens on a free port of its own, keeps nothing on disk (``--save "" --appendonly no``, so a
restart comes back empty, as a Redis without persistence does), runs in its own process group,
and the ``private_redis`` fixture kills that group when the test ends, pass or fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.net import free_port

REDIS_SERVER = shutil.which("redis-server") or "redis-server"


@dataclass
class RedisServer:
    port: int
    workdir: Path
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def start(self, *, timeout: float = 10) -> None:
        """Start (or restart) the server, empty, and wait until it answers PING."""
        assert self.popen is None or self.popen.poll() is not None, "already running"
        log_path = self.workdir / f"redis-{self.port}-{self.starts}.log"
        self.starts += 1
        self.logs.append(log_path)
        with open(log_path, "wb") as out:
            self.popen = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.workdir),
                ],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.client() as c:
                    if c.ping():
                        return
            except redis.RedisError:
                pass
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server on port {self.port} did not start:\n{self.log()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the server's whole process group and wait for it: every message it held is gone."""
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(10)

    def shutdown_nosave(self) -> None:
        """``SHUTDOWN NOSAVE``: Redis closes every connection and exits without writing anything."""
        assert self.popen is not None
        try:
            with self.client() as c:
                c.shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # redis-py reports the connection the server closed while exiting
        self.popen.wait(10)

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())[-3000:]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A running private redis-server on a free port, killed (whole group) when the test ends."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(port=free_port(), workdir=workdir)
    server.start()
    try:
        yield server
    finally:
        server.kill()
