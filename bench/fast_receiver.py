"""``FastReceiver``: bench/webhook_receiver.py run as a process of its own, and what it saw."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent


class FastReceiver:
    """A keep-alive webhook receiver in its own process (own process group, stopped by
    ``close``), so it shares no interpreter lock with the benchmark or the workers."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port_file = workdir / "receiver.port"
        self.arrivals_file = workdir / "receiver.arrivals"
        for path in (self.port_file, self.arrivals_file):
            path.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "webhook_receiver.py"), str(self.port_file), str(self.arrivals_file)],
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while not (self.port_file.exists() and self.port_file.read_text()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port_file.read_text()}/hook"

    def lines(self) -> list[tuple[float, str, str]]:
        """(arrival, webhook-id, timer id) of every request so far."""
        if not self.arrivals_file.exists():
            return []
        rows = []
        for line in self.arrivals_file.read_text().splitlines():
            at, webhook_id, timer_id = line.split(" ")
            rows.append((float(at), webhook_id, timer_id))
        return rows

    def count(self) -> int:
        if not self.arrivals_file.exists():
            return 0
        with self.arrivals_file.open("rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 16), b""))

    def first_arrivals(self) -> dict[str, float]:
        """Each timer's first arrival."""
        first: dict[str, float] = {}
        for at, _, timer_id in self.lines():
            first.setdefault(timer_id, at)
        return first

    def repeated_webhook_ids(self) -> int:
        """Requests whose webhook-id had been seen before (a delivery sent twice)."""
        return sum(n - 1 for n in Counter(webhook_id for _, webhook_id, _ in self.lines()).values() if n > 1)

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
