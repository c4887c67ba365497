"""The web and action workers' lower CPU priority (minoots_project/priority.py), in processes
of their own: a nice value only ever goes up in a process."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.ops.conftest import ROOT, clean_env

STEP_TWICE = (
    "import os; from minoots_project.priority import yield_to_firing; "
    "yield_to_firing('action worker'); "
    # Celery's SIGHUP restart: execv of the same command, environment and nice value kept.
    "os.execv(sys.executable, [sys.executable, '-c', "
    "'import os; from minoots_project.priority import yield_to_firing; "
    'yield_to_firing("action worker"); print(os.getpriority(os.PRIO_PROCESS, 0))\'])'
)


def run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", f"import sys; {code}"],
        cwd=ROOT,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_worker_that_restarts_itself_in_place_steps_down_once_not_again() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    result = run(STEP_TWICE, MINOOTS_YIELD_NICE="3")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) == min(19, base + 3)


def test_a_bad_yield_nice_stops_the_web_before_it_forks_a_worker() -> None:
    result = run("import minoots_project.gunicorn_conf", MINOOTS_YIELD_NICE="25")
    assert result.returncode != 0
    assert "MINOOTS_YIELD_NICE must be an integer from 0 to 19, not '25'" in result.stderr
