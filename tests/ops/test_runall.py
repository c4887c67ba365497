"""`make run` end to end: web, the firing worker, an action worker and beat under runall, from a
copy of the repository.

Waits are bounded ("eventually, within N seconds"); nothing here asserts how fast.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings

from minoots_project.runall import FIRING_CONCURRENCY, NAMES, commands
from tests.factories import make_api_key
from tests.net import free_port
from tests.ops.conftest import ROOT, Supervised, Tree, alive, clean_env, wait_http_ok
from tests.processes import database_url, wait_for
from timers.models import Tenant

pytestmark = pytest.mark.e2e

ONCE = pytest.mark.once_on_sqlite(reason="never uses the test database (its own embedded SQLite, or none)")

API_KEY = re.compile(r"mk_[0-9a-f]+_[A-Za-z0-9_\-]{8,}")


def create_timer(base: str, key: str, *, trace_id: str | None = None) -> dict[str, Any]:
    headers = {"X-API-Key": key}
    if trace_id:
        headers["x-trace-id"] = trace_id
    response = requests.post(
        f"{base}/api/timers", json={"name": "ops", "duration": "500ms"}, headers=headers, timeout=10
    )
    assert response.status_code == 201, response.text
    return response.json()


def wait_settled(base: str, key: str, timer_id: str) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        body = requests.get(f"{base}/api/timers/{timer_id}", headers={"X-API-Key": key}, timeout=5).json()
        return body if body["status"] == "settled" else None

    return wait_for(settled, timeout=30, interval=0.2, what="the timer to settle")


def metrics_text(base: str) -> str:
    response = requests.get(f"{base}/metrics", timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return response.text


def wait_metrics(base: str, *samples: str) -> str:
    """A worker counts just after its commit: give the scrape a moment to see it."""

    def scraped() -> str | None:
        text = metrics_text(base)
        return text if all(sample in text for sample in samples) else None

    return wait_for(scraped, timeout=10, interval=0.2, what=f"metrics {samples}")


def stop_and_check_clean_exit(tree: Tree, sig: int) -> str:
    """Every process of the tree is gone and runall says it stopped them all."""
    children = tree.remember()
    assert children, "no child processes were seen"
    tree.terminate(sig, timeout=45)
    assert not [pid for pid in tree.known if alive(pid)], "a child survived the shutdown"
    output = tree.output()
    assert re.search(r"stopped \(web=\S+, firing=\S+, worker=\S+, beat=\S+\)", output), output[-3000:]
    return output


@ONCE
def test_make_run_embedded_fires_a_timer_counts_it_and_logs_json_without_secrets(
    repo_copy: Path, supervised: Supervised
) -> None:
    port = free_port()
    env = clean_env(PORT=str(port), LOG_FORMAT="json", MINOOTS_SHUTDOWN_GRACE="20")
    tree = supervised.start(
        "make-run-embedded", ["make", "--no-print-directory", "run", f"PORT={port}"], cwd=repo_copy, env=env
    )
    base = f"http://127.0.0.1:{port}"
    assert wait_http_ok(f"{base}/healthz", tree).json() == {"status": "ok"}

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
    assert key.startswith("mk_")

    timer = create_timer(base, key, trace_id="ops-trace-1")
    settled = wait_settled(base, key, timer["id"])
    assert settled["firedAt"] is not None
    # A client that puts its key in the URL: the access log line must not keep it.
    requests.get(f"{base}/api/timers", params={"api_key": key}, headers={"X-API-Key": key}, timeout=5)

    # Fired by the firing worker process, counted in the web's scrape (multiprocess mode).
    wait_metrics(
        base,
        'minoots_timers_fired_total{tenant="acme"} 1.0',
        'minoots_timers_settled_total{tenant="acme"} 1.0',
        'minoots_timers_created_total{tenant="acme"} 1.0',
        "minoots_fire_lateness_seconds_count 1.0",
        "minoots_timers_armed 0.0",
    )

    admin_css = requests.get(f"{base}/static/admin/css/base.css", timeout=5)
    assert admin_css.status_code == 200  # served by gunicorn + WhiteNoise, no debug server

    output = stop_and_check_clean_exit(tree, signal.SIGINT)  # Ctrl-C in a terminal
    # The embedded default really was used: SQLite and the filesystem broker in the copy's .data.
    assert (repo_copy / ".data" / "minoots.sqlite3").exists()
    assert (repo_copy / ".data" / "broker" / "queue").is_dir()

    # Before runall come make's echo of the recipe and migrate's report; after it, make's status.
    start = output.index('{"service": "runall"')
    records = [
        json.loads(line)  # every line of runall's output is one JSON object
        for line in output[start:].splitlines()
        if line.strip() and not line.startswith("make")
    ]
    assert key not in output and not API_KEY.search(output)
    assert {r.get("service") for r in records} >= {"runall", "web", "firing", "worker", "beat"}
    created = [r for r in records if r.get("event") == "created" and r.get("timer_id") == timer["id"]]
    assert created and created[0]["tenant"] == "acme" and created[0]["trace_id"] == "ops-trace-1"
    # The request's trace id travelled with the tick into the firing worker, which fired it.
    assert any(r.get("service") == "firing" and r.get("trace_id") == "ops-trace-1" for r in records)


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres_only(reason="`make run` with DATABASE_URL on Postgres; the embedded default has its own tests")
def test_make_run_on_postgres_and_redis_fires_a_timer(
    repo_copy: Path, supervised: Supervised, tmp_path: Path, tenant: Tenant
) -> None:
    key = make_api_key(tenant=tenant, name="ops")
    port = free_port()
    env = clean_env(
        PORT=str(port),
        DATABASE_URL=database_url(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        SECRET_KEY="ops-test-secret",
        MINOOTS_DATA_DIR=str(tmp_path / "data"),
        MINOOTS_SHUTDOWN_GRACE="20",
    )
    tree = supervised.start(
        "make-run-postgres", ["make", "--no-print-directory", "run", f"PORT={port}"], cwd=repo_copy, env=env
    )
    base = f"http://127.0.0.1:{port}"
    wait_http_ok(f"{base}/healthz", tree)
    ready = requests.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "migrations": "ok", "broker": "ok"}

    timer = create_timer(base, key)
    wait_settled(base, key, timer["id"])
    wait_metrics(base, f'minoots_timers_fired_total{{tenant="{tenant.id}"}} 1.0')
    assert_the_firing_worker_comes_first_on_the_cpu(tree.remember())

    output = stop_and_check_clean_exit(tree, signal.SIGTERM)
    for name in ("web", "firing", "worker", "beat"):
        assert re.search(rf"^{name}\s* \| ", output, re.M), f"no line prefixed with {name}"
    assert not (tmp_path / "data" / "minoots.sqlite3").exists()  # Postgres, not the embedded default


def assert_the_firing_worker_comes_first_on_the_cpu(pids: list[int]) -> None:
    """The action worker and the web's gunicorn workers run MINOOTS_YIELD_NICE (5) nice levels
    below the firing worker, whose level is the supervisor's (minoots_project/priority.py)."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    levels: dict[str, set[int]] = {}
    for pid in pids:
        try:
            argv, parent, nice = _proc(pid)
            role = _role(argv, _proc(parent)[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
        if role:
            levels.setdefault(role, set()).add(nice)
    assert levels == {"firing": {base}, "action worker": {base + 5}, "web worker": {base + 5}}, levels


def _proc(pid: int) -> tuple[list[str], int, int]:
    """(argv, parent pid, nice) of a live process, from /proc."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return argv, int(fields[1]), int(fields[16])  # ppid, nice (proc(5): fields 4 and 19)


def _role(argv: list[str], parent_argv: list[str]) -> str | None:
    if "worker" in argv and "-Q" in argv:
        return {"timers": "firing", "actions": "action worker"}.get(argv[argv.index("-Q") + 1])
    if any("gunicorn" in a for a in argv) and any("gunicorn" in a for a in parent_argv):
        return "web worker"  # a child of gunicorn's master, which itself stays at the supervisor's level
    return None


# --- The children's command lines ----------------------------------------------------------


def worker_queues(argv: list[str]) -> set[str]:
    return set(argv[argv.index("-Q") + 1].split(","))


def test_firing_has_a_worker_of_its_own_that_actions_never_occupy(tmp_path: Path) -> None:
    argvs = commands(python=sys.executable, data_dir=tmp_path, log_level="INFO", concurrency=16)
    assert list(argvs) == list(NAMES) == ["web", "firing", "worker", "beat"]
    workers = {name: argv for name, argv in argvs.items() if argv[2:6] == ["celery", "-A", "minoots_project", "worker"]}
    assert set(workers) == {"firing", "worker"}
    # Every routed queue (and the default one) has a consumer; no worker consumes two of them.
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    assert routed == {"timers", "actions"} and settings.CELERY_TASK_DEFAULT_QUEUE == "timers"
    assert worker_queues(workers["firing"]) == {"timers"}
    assert worker_queues(workers["worker"]) == {"actions"}
    for name, argv in workers.items():
        assert argv[argv.index("--pool") + 1] == "threads", name
    # A small pool for firing; CELERY_WORKER_CONCURRENCY sizes the action worker only.
    assert int(workers["firing"][workers["firing"].index("--concurrency") + 1]) == FIRING_CONCURRENCY <= 8
    assert workers["worker"][workers["worker"].index("--concurrency") + 1] == "16"
    # Two workers on one host need two node names (remote control, `celery inspect ping`).
    nodes = {argv[argv.index("--hostname") + 1] for argv in workers.values()}
    assert nodes == {"firing@%h", "worker@%h"}


# --- The supervisor itself, with stand-in children -------------------------------------------
# What a Procfile runner would lose (honcho 2.0.0, see runall's docstring): the grace before
# SIGKILL counted from the stop request, a second Ctrl-C, exit status 0 for a requested stop and
# 1 for any child that ends on its own, and children that do not outlive a killed supervisor.

CHILD = """
import signal, subprocess, sys, time

mode = sys.argv[1]
if mode == "stubborn":  # deaf to SIGTERM, and so is its grandchild (same process group)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"grandchild {grandchild.pid}", flush=True)
if mode == "family":  # its grandchild reports the SIGTERM that reached the whole group
    subprocess.Popen([sys.executable, "-c", (
        "import signal, sys, time\\n"
        "def bye(*_):\\n    print('grandchild got SIGTERM', flush=True); sys.exit(0)\\n"
        "signal.signal(signal.SIGTERM, bye)\\nprint('grandchild up', flush=True)\\ntime.sleep(600)"
    )])
print(f"{mode} up with key mk_0123abcd_SECRETsecretSECRET", flush=True)
if mode == "exit0":
    time.sleep(1)
    sys.exit(0)
time.sleep(600)
"""

SUPERVISE = """
import json, os, sys
from pathlib import Path
from minoots_project.runall import Child, Output, Supervisor

spec = json.loads(sys.argv[1])
children = [Child(name, [sys.executable, spec["child"], mode]) for name, mode in spec["children"].items()]
output = Output(json_mode=False)
sys.exit(Supervisor(children, output=output, env=dict(os.environ), cwd=Path.cwd(), grace=spec["grace"]).run())
"""


@pytest.fixture
def supervise(supervised: Supervised, tmp_path: Path) -> Any:
    """Start runall's Supervisor over stand-in children: ``supervise({"web": "sleep"}, grace=1)``."""
    child = tmp_path / "child.py"
    child.write_text(CHILD)

    def start(children: dict[str, str], *, grace: float) -> Tree:
        spec = json.dumps({"child": str(child), "children": children, "grace": grace})
        tree = supervised.start("supervisor", [sys.executable, "-c", SUPERVISE, spec], cwd=ROOT, env=clean_env())
        modes = set(children.values())
        wait_for(lambda: all(f"{mode} up" in tree.output() for mode in modes), timeout=30, what=f"children {modes}")
        tree.remember()
        return tree

    return start


def exit_status(tree: Tree, *, within: float) -> int:
    wait_for(lambda: tree.popen.poll() is not None, timeout=within, what="the supervisor to exit")
    assert tree.popen.returncode is not None
    return tree.popen.returncode


@ONCE
def test_a_requested_stop_terms_each_whole_group_kills_the_deaf_after_the_grace_and_exits_0(supervise: Any) -> None:
    tree = supervise({"web": "stubborn", "beat": "family"}, grace=1)
    wait_for(lambda: "grandchild up" in tree.output(), timeout=30, what="beat's grandchild")
    grandchild = int(wait_for(lambda: re.search(r"grandchild (\d+)", tree.output()), timeout=5, what="a pid").group(1))
    tree.remember()

    os.kill(tree.popen.pid, signal.SIGTERM)  # what systemd or a container runtime sends

    assert exit_status(tree, within=30) == 0
    output = tree.output()
    assert re.search(r"^beat\s* \| grandchild got SIGTERM$", output, re.M), output  # the group, not only the leader
    assert "web still running after 1s; killing it" in output
    assert "stopped (web=-9, beat=-15)" in output
    assert not alive(grandchild) and not [pid for pid in tree.known if alive(pid)]
    assert re.search(r"^web\s* \| stubborn up with key mk_0123abcd_\[REDACTED\]$", output, re.M), output
    assert "SECRETsecretSECRET" not in output


@ONCE
def test_a_second_ctrl_c_kills_at_once_instead_of_waiting_for_the_grace(supervise: Any) -> None:
    tree = supervise({"worker": "stubborn"}, grace=600)

    os.killpg(tree.popen.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the foreground group
    wait_for(lambda: "got SIGINT; stopping everything" in tree.output(), timeout=10, what="the first Ctrl-C")
    os.killpg(tree.popen.pid, signal.SIGINT)

    assert exit_status(tree, within=30) == 0  # far less than the 600 s grace
    assert "worker still running after 600s; killing it" in tree.output()
    assert not [pid for pid in tree.known if alive(pid)]


@ONCE
def test_the_children_get_sigterm_when_the_supervisor_itself_is_killed(supervise: Any) -> None:
    tree = supervise({"web": "sleep", "beat": "sleep"}, grace=20)
    children = tree.remember()
    assert children

    os.kill(tree.popen.pid, signal.SIGKILL)  # no chance to stop them itself

    wait_for(lambda: not [pid for pid in children if alive(pid)], timeout=15, what="the orphans to get SIGTERM")
