"""runall restarts a child that dies on its own, with backoff, and the others go on serving.

Waits are bounded ("eventually, within N seconds"); nothing here asserts how fast beyond that.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from minoots_project.runall import Backoff
from tests.net import free_port
from tests.ops.conftest import ROOT, Supervised, alive, clean_env, wait_http_ok
from tests.ops.test_runall import create_timer, wait_settled
from tests.processes import wait_for

# runall over a copy of the repository with its own embedded SQLite, or over stand-in children:
# the test database is never used, so the full suite runs these once.
pytestmark = [pytest.mark.e2e, pytest.mark.once_on_sqlite(reason="never uses the test database")]


@pytest.mark.parametrize("name", ["web", "firing", "worker", "beat"])
def test_compose_restarts_each_long_running_service_that_dies(name: str) -> None:
    """Under compose the container runtime is the supervisor (with its own growing delay)."""
    service = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"][name]
    assert service.get("restart") in ("unless-stopped", "always")


def test_backoff_doubles_from_one_second_to_thirty_and_starts_over_after_a_stable_run() -> None:
    backoff = Backoff()
    assert [backoff.delay(ran_for=0.5) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(ran_for=61) == 1  # it had run a minute: a new failure, not the same one
    assert backoff.delay(ran_for=3) == 2


class HealthPoller:
    """GETs /healthz every 0.2 s in a thread and records every answer that was not a 200."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.failures: list[str] = []
        self.answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = requests.get(self.url, timeout=5)
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
            self.answers += 1
            self._stop.wait(0.2)

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_runall_restarts_a_killed_firing_worker_while_web_keeps_answering(
    repo_copy: Path, supervised: Supervised, tmp_path: Path
) -> None:
    port = free_port()
    env = clean_env(PORT=str(port), MINOOTS_DATA_DIR=str(tmp_path / "data"), MINOOTS_SHUTDOWN_GRACE="20")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=repo_copy, env=env, check=True, timeout=120)
    tree = supervised.start("runall", [sys.executable, "-m", "minoots_project.runall"], cwd=repo_copy, env=env)
    base = f"http://127.0.0.1:{port}"
    wait_http_ok(f"{base}/healthz", tree)
    first = wait_for(lambda: re.search(r"started firing \(pid (\d+)\)", tree.output()), timeout=10, what="firing pid")
    wait_for(lambda: re.search(r"^firing\s* \| .* ready\.", tree.output(), re.M), timeout=60, what="firing ready")
    tree.remember()

    with HealthPoller(f"{base}/healthz") as health:
        os.killpg(int(first.group(1)), signal.SIGKILL)
        again = wait_for(
            lambda: re.search(r"restarted \(restart 1\) firing \(pid (\d+)\)", tree.output()),
            timeout=30,
            what="runall to start the firing worker again",
        )
        wait_for(
            lambda: len(re.findall(r"^firing\s* \| .* ready\.", tree.output(), re.M)) >= 2,
            timeout=60,
            what="the restarted firing worker to be ready",
        )
        tree.remember()
        time.sleep(1)
    assert tree.popen.poll() is None, "runall stopped"
    assert re.search(r"firing exited unexpectedly with code -9 after [\d.]+s; restarting it in 1s", tree.output())
    assert int(again.group(1)) != int(first.group(1)) and alive(int(again.group(1)))
    assert health.answers > 5 and health.failures == [], health.failures  # web answered throughout

    # The new firing worker fires timers.
    made = subprocess.run(
        [sys.executable, "manage.py", "create_api_key", "acme"],
        cwd=repo_copy,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    key = made.stdout.strip().splitlines()[-1]
    wait_settled(base, key, create_timer(base, key)["id"])

    tree.terminate(signal.SIGTERM, timeout=45)
    assert tree.popen.returncode == 0
    assert not [pid for pid in tree.known if alive(pid)], "a child survived the shutdown"
    assert re.search(r"stopped \(web=\S+, firing=\S+, worker=\S+, beat=\S+\)", tree.output())


# A stand-in child that exits on its own shortly after each start, and a supervisor over it.
FLAPPING_CHILD = """
import sys, time
print("flapper up", flush=True)
time.sleep(float(sys.argv[1]))
sys.exit(3)
"""

SUPERVISE = """
import json, os, sys
from pathlib import Path
from minoots_project.runall import Child, Output, Supervisor

spec = json.loads(sys.argv[1])
children = [Child(name, [sys.executable, *argv]) for name, argv in spec["children"].items()]
sys.exit(Supervisor(children, output=Output(json_mode=False), env=dict(os.environ), cwd=Path.cwd(), grace=5).run())
"""


def test_a_child_that_keeps_dying_is_restarted_with_growing_delays_and_a_stop_still_ends_everything(
    supervised: Supervised, tmp_path: Path
) -> None:
    flapper = tmp_path / "flapper.py"
    flapper.write_text(FLAPPING_CHILD)
    spec = {"children": {"worker": [str(flapper), "0.2"], "web": ["-c", "import time; time.sleep(600)"]}}
    tree = supervised.start(
        "supervisor", [sys.executable, "-c", SUPERVISE, json.dumps(spec)], cwd=ROOT, env=clean_env()
    )

    # The third restart is announced before the restarted child prints its own first line.
    wait_for(
        lambda: "restarted (restart 3) worker" in tree.output() and tree.output().count("flapper up") >= 4,
        timeout=30,
        what="three restarts of the flapping child, each of them up",
    )
    output = tree.output()
    delays = re.findall(r"worker exited unexpectedly with code 3 after [\d.]+s; restarting it in (\d+)s", output)
    assert delays[:3] == ["1", "2", "4"], output
    web = re.search(r"started web \(pid (\d+)\)", output)
    assert web is not None and alive(int(web.group(1)))  # never restarted: it did not die
    assert "restarted (restart 1) web" not in output
    tree.remember()

    os.kill(tree.popen.pid, signal.SIGTERM)
    wait_for(lambda: tree.popen.poll() is not None, timeout=30, what="the supervisor to exit")
    assert tree.popen.returncode == 0
    assert not [pid for pid in tree.known if alive(pid)]
    assert re.search(r"stopped \((worker=\S+, web=-15|web=-15, worker=\S+)\)", tree.output()), tree.output()
