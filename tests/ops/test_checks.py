"""The settings invariants of minoots_project.checks: each fails with its message, and a process
with a broken one refuses to start (``manage.py``, worker, beat)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.checks import CheckMessage, run_checks
from pytest_django.fixtures import Settings

from actions.runners import registry
from minoots_project import checks
from tests.processes import CELERY, ROOT


def ids(messages: list[CheckMessage]) -> list[str | None]:
    return [message.id for message in messages]


def check_env(**overrides: str) -> dict[str, str]:
    """This session's environment (Redis broker, Postgres) with a setting changed."""
    env = {k: v for k, v in os.environ.items() if k != "CELERY_SKIP_CHECKS"}
    env.update(PYTHONUNBUFFERED="1", **overrides)
    return env


def test_the_default_settings_pass_every_minoots_check() -> None:
    assert run_checks(tags=[checks.TAG]) == []


def test_a_visibility_timeout_below_twice_horizon_plus_lease_is_an_error(settings: Settings) -> None:
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 700}  # needs 2 x (60 + 300) = 720

    [error] = checks.check_visibility_timeout(None)

    assert error.id == "minoots.E001" and error.is_serious()
    assert "CELERY_VISIBILITY_TIMEOUT (700 s) must be at least" in error.msg
    assert "720 s" in error.msg and "delivered twice" in error.msg
    assert "CELERY_VISIBILITY_TIMEOUT=721" in (error.hint or "")
    assert "minoots.E001" in ids(run_checks())  # registered, not only callable


def test_a_longer_horizon_or_lease_raises_the_visibility_timeout_needed(settings: Settings) -> None:
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 21600}
    assert checks.check_visibility_timeout(None) == []

    settings.MINOOTS_ARM_HORIZON = timedelta(hours=3)

    [error] = checks.check_visibility_timeout(None)
    assert "MINOOTS_ARM_HORIZON 10800 s + MINOOTS_ACTION_LEASE 300 s" in error.msg


def test_redis_without_a_visibility_timeout_is_held_to_kombus_default_of_an_hour(settings: Settings) -> None:
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/15"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    settings.MINOOTS_ACTION_LEASE = timedelta(minutes=40)

    [error] = checks.check_visibility_timeout(None)
    assert "(3600 s)" in error.msg


def test_the_filesystem_broker_has_no_visibility_timeout_to_check(settings: Settings) -> None:
    settings.CELERY_BROKER_URL = "filesystem://localhost//"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": "/tmp/q", "data_folder_out": "/tmp/q"}
    settings.MINOOTS_ACTION_LEASE = timedelta(hours=10)

    assert checks.check_visibility_timeout(None) == []


def test_a_lease_shorter_than_a_runners_longest_attempt_is_an_error(settings: Settings) -> None:
    settings.MINOOTS_ACTION_LEASE = timedelta(seconds=200)  # webhook attempts: 3 x 60 s; commands: 240 s

    [error] = checks.check_attempts_end_within_the_lease(None)

    assert error.id == "minoots.E002" and error.is_serious()
    assert error.msg.startswith("A command attempt can last 240 s")
    assert "MINOOTS_ACTION_LEASE (200 s)" in error.msg
    assert "Set MINOOTS_ACTION_LEASE above 240s" in (error.hint or "")
    assert "MAX_TIMEOUT_MS in actions/runners/command.py" in (error.hint or "")


def test_a_webhook_attempt_counts_its_slot_wait_and_its_timeout_against_the_lease(settings: Settings) -> None:
    settings.MINOOTS_ACTION_LEASE = timedelta(seconds=120)

    messages = checks.check_attempts_end_within_the_lease(None)

    webhook = [m for m in messages if m.msg.startswith("A webhook attempt")]
    assert len(webhook) == 1 and "can last 125 s" in webhook[0].msg
    assert "MAX_TIMEOUT_MS and SLOT_WAIT_SECONDS in actions/runners/webhook.py" in (webhook[0].hint or "")


def test_a_task_time_limit_shorter_than_a_runners_longest_attempt_is_an_error(settings: Settings) -> None:
    settings.CELERY_TASK_SOFT_TIME_LIMIT = 200
    settings.CELERY_TASK_TIME_LIMIT = 230

    messages = checks.check_attempts_end_within_the_task_time_limits(None)

    # Commands (240 s) break both limits, webhooks (3 x 60 s) neither.
    assert {m.id for m in messages} == {"minoots.E003"} and len(messages) == 2
    assert all(m.msg.startswith("A command attempt can last 240 s") for m in messages)
    assert any("not below CELERY_TASK_SOFT_TIME_LIMIT (200 s" in m.msg for m in messages)
    assert any("not below CELERY_TASK_TIME_LIMIT (230 s" in m.msg for m in messages)
    assert all("Celery would interrupt the attempt" in m.msg for m in messages)


def test_no_task_time_limit_means_nothing_to_exceed(settings: Settings) -> None:
    settings.CELERY_TASK_SOFT_TIME_LIMIT = None
    settings.CELERY_TASK_TIME_LIMIT = None

    assert checks.check_attempts_end_within_the_task_time_limits(None) == []


def test_every_runner_kind_has_an_attempt_bound_or_is_known_to_need_none() -> None:
    bounded = {bound.kind for bound in checks.attempt_bounds()}

    assert set(registry.RUNNERS) == bounded | checks.KINDS_WITHOUT_TIMEOUT, (
        "a new action kind: add its longest attempt to minoots_project.checks.attempt_bounds"
    )


def run(argv: list[str], **overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=ROOT, env=check_env(**overrides), capture_output=True, text=True, timeout=90, check=False
    )


def test_manage_py_check_exits_non_zero_naming_the_variable_when_the_visibility_timeout_is_too_low() -> None:
    done = run([sys.executable, "manage.py", "check"], CELERY_VISIBILITY_TIMEOUT="60")

    assert done.returncode != 0
    assert "(minoots.E001) CELERY_VISIBILITY_TIMEOUT (60 s) must be at least" in done.stderr, done.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(
    "argv",
    [
        # A queue nobody publishes to: were the check to let it start, it would consume nothing.
        ["worker", "-Q", "minoots-checks-test", "--pool", "solo", "--without-mingle", "--without-gossip"],
        ["beat", "--schedule", "{tmp}/celerybeat-schedule"],
    ],
    ids=["worker", "beat"],
)
def test_worker_and_beat_refuse_to_start_with_a_failing_check(argv: list[str], tmp_path: Path) -> None:
    argv = [arg.format(tmp=tmp_path) for arg in argv]

    done = run([CELERY, "-A", "minoots_project", *argv], MINOOTS_ACTION_LEASE="1m")

    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "not starting" in done.stderr
    assert "(minoots.E002) A webhook attempt can last 125 s" in done.stderr
    assert "MINOOTS_ACTION_LEASE (60 s)" in done.stderr
    assert "ready." not in done.stdout + done.stderr
