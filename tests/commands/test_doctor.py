"""``minoots doctor``: every check on one line with what to do; exit 1 on a problem."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import CommandError
from django.utils import timezone

from minoots_project.celery import app
from tests.commands.conftest import run
from tests.factories import make_run, make_timer
from tests.net import free_port
from tests.processes import ROOT, Processes, service_env, wait_for
from timers.models import Tenant
from timers.reconciler_status import reconcile_pass_record


def _doctor_json(*args: str) -> tuple[dict[str, Any], bool]:
    """(doctor's JSON, whether it failed)."""
    import json
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    try:
        call_command("minoots", "doctor", "--json", "--timeout", "0.5", *args, stdout=out, stderr=StringIO())
        failed = False
    except CommandError:
        failed = True
    return json.loads(out.getvalue()), failed


def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_doctor_lists_every_check(db: Any, broker: Any) -> None:
    report, failed = _doctor_json()
    assert list(_checks(report)) == [
        "database",
        "migrations",
        "broker",
        "workers",
        "beat",
        "clock",
        "overdue timers",
        "stuck runs",
        "queues",
    ]
    checks = _checks(report)
    assert checks["database"]["status"] == checks["migrations"]["status"] == checks["broker"]["status"] == "ok"
    assert checks["clock"]["status"] == "ok"
    assert checks["queues"]["status"] == "ok" and "timers 0, actions 0" in checks["queues"]["detail"]
    # No worker runs in this test, and no reconciler pass was recorded: two problems, exit 1.
    assert failed and report["ok"] is False
    assert checks["workers"]["status"] == "problem" and "worker -Q timers" in checks["workers"]["advice"]
    assert checks["beat"]["status"] == "problem" and "celery -A minoots_project beat" in checks["beat"]["advice"]


def test_doctor_prints_one_line_per_check_and_fails_with_a_summary(db: Any, broker: Any) -> None:
    with pytest.raises(CommandError, match=r"^2 problem\(s\): workers, beat$"):
        run("doctor", "--timeout", "0.5")


def test_doctor_reports_overdue_timers_stuck_runs_and_deep_queues(tenant: Tenant, broker: Any) -> None:
    now = timezone.now()
    make_timer(tenant=tenant, status="armed", fire_at=now - timedelta(minutes=3))
    make_timer(tenant=tenant, status="scheduled", fire_at=now - timedelta(minutes=1))
    fired = make_timer(tenant=tenant, status="fired")
    make_run(timer=fired, status="running", lease_expires_at=now - timedelta(minutes=2))
    for _ in range(3):
        broker.lpush("actions", "{}")
    reconcile_pass_record(report={"armed": 0}, at=now)

    report, failed = _doctor_json("--max-queue-depth", "2")

    checks = _checks(report)
    assert failed
    assert checks["overdue timers"]["status"] == "problem"
    assert "1 armed, the oldest 3 min late" in checks["overdue timers"]["detail"]
    assert (
        "1 still scheduled" in checks["overdue timers"]["detail"] and "start beat" in checks["overdue timers"]["advice"]
    )
    assert checks["stuck runs"]["status"] == "problem" and "1 action run(s)" in checks["stuck runs"]["detail"]
    assert checks["queues"]["status"] == "problem" and "actions 3" in checks["queues"]["detail"]
    assert checks["beat"]["status"] == "ok"


def test_doctor_says_when_the_reconciler_stopped(db: Any, broker: Any) -> None:
    reconcile_pass_record(report={"armed": 2}, at=timezone.now() - timedelta(minutes=10))
    beat = _checks(_doctor_json()[0])["beat"]
    assert beat["status"] == "problem" and "last pass was 10 min ago" in beat["detail"]
    assert "armed 2" in beat["detail"]


@pytest.fixture
def closed_broker() -> Any:
    """The Celery app pointed at a port nothing listens on, as with a wrong CELERY_BROKER_URL."""
    names = ("broker_url", "broker_write_url", "broker_read_url")
    saved = {name: app.conf[name] for name in names}
    closed = f"redis://127.0.0.1:{free_port()}/0"
    app.conf.update(dict.fromkeys(names, closed))
    try:
        yield
    finally:
        app.conf.update(saved)


def test_doctor_exits_1_when_the_broker_is_down(db: Any, closed_broker: None) -> None:
    report, failed = _doctor_json()
    checks = _checks(report)
    assert failed
    assert checks["broker"]["status"] == "problem" and "check CELERY_BROKER_URL" in checks["broker"]["advice"]
    assert checks["workers"]["status"] == "unknown" and checks["database"]["status"] == "ok"


@pytest.mark.django_db(transaction=True)
def test_manage_py_doctor_exits_1_with_the_broker_down(tmp_path: Any) -> None:
    env = service_env(tmp_path / "data", CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0")
    done = subprocess.run(
        [sys.executable, "manage.py", "minoots", "doctor", "--timeout", "0.5"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "PROBLEM  broker" in done.stdout and "check CELERY_BROKER_URL" in done.stdout
    assert done.stderr.strip().splitlines()[-1].startswith("CommandError: ")


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_doctor_passes_with_workers_and_beat_running(processes: Processes, broker: Any) -> None:
    processes.wait_ready(processes.worker(queues="timers,actions", wait=False), processes.beat(wait=False))
    env = processes.env

    def doctor() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", "minoots", "doctor"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = wait_for(lambda: (d := doctor()).returncode == 0 and d, timeout=30, interval=1, what="doctor to pass")
    assert "No problem found." in done.stderr
    assert all(line.startswith(("ok ", "   ")) for line in done.stdout.splitlines()[1:]), done.stdout
