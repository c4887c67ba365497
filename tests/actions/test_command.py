"""The command runner: allow-list, no shell, minimal environment, process-group kill."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actions.errors import ParameterError
from actions.models import ActionRun, AttemptOutcome, RunStatus
from actions.runners import get_runner
from actions.runners.command import CommandParams
from tests.actions.conftest import FireTimer
from tests.actions.support import drive
from timers.models import TimerStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def allowlist(settings: Any) -> list[str]:
    settings.MINOOTS_COMMAND_ALLOWLIST = ["/bin/echo", "/bin/sh", "/usr/bin/env"]
    return settings.MINOOTS_COMMAND_ALLOWLIST


def command(action_id: str, *argv: str, **parameters: Any) -> dict[str, Any]:
    return {"id": action_id, "kind": "command", "parameters": {"argv": list(argv), **parameters}}


def only_run(timer: Any) -> ActionRun:
    return ActionRun.objects.get(timer=timer)


def process_is_gone(pid: int) -> bool:
    """True when ``pid`` no longer exists or is a zombie waiting for its (new) parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_allow_listed_command_runs_and_its_output_is_recorded(allowlist: list[str], fire_timer: FireTimer) -> None:
    timer = drive(fire_timer(command("hello", "/bin/echo", "hello", "world")))

    run = only_run(timer)
    assert run.status == RunStatus.SUCCEEDED
    attempt = run.attempt_records.get()
    assert (attempt.outcome, attempt.exit_code) == (AttemptOutcome.SUCCEEDED, 0)
    assert attempt.output_excerpt == "hello world\n"
    assert timer.status == TimerStatus.SETTLED


def test_shell_metacharacters_stay_one_argument(allowlist: list[str], fire_timer: FireTimer, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    canary.write_text("still here")

    timer = drive(fire_timer(command("quoted", "/bin/echo", f"; rm -rf {canary}; echo pwned $(id) `id`")))

    attempt = only_run(timer).attempt_records.get()
    assert attempt.output_excerpt == f"; rm -rf {canary}; echo pwned $(id) `id`\n"
    assert canary.read_text() == "still here"


def test_bare_name_runs_the_allow_listed_path(allowlist: list[str], fire_timer: FireTimer) -> None:
    timer = drive(fire_timer(command("bare", "echo", "via allow-list")))

    assert only_run(timer).attempt_records.get().output_excerpt == "via allow-list\n"


@pytest.mark.parametrize(
    "argv0",
    ["/bin/cat", "cat", "/bin/../bin/cat", "./echo", "bin/echo", "/usr/local/bin/echo", "/bin/sh "],
)
def test_executables_outside_the_allow_list_are_refused(allowlist: list[str], argv0: str) -> None:
    with pytest.raises(ParameterError) as info:
        get_runner("command").validate({"argv": [argv0, "/etc/passwd"]}, tenant_id="acme")
    assert info.value.field == "argv"
    assert "MINOOTS_COMMAND_ALLOWLIST" in info.value.message


def test_command_removed_from_the_allow_list_after_creation_fails_for_good(
    settings: Any, fire_timer: FireTimer
) -> None:
    settings.MINOOTS_COMMAND_ALLOWLIST = ["/bin/sh"]
    timer = drive(fire_timer(command("cat", "/bin/cat", "/etc/passwd")))

    run = only_run(timer)
    assert run.status == RunStatus.FAILED
    assert run.attempt_records.get().outcome == AttemptOutcome.PERMANENT
    assert "not in MINOOTS_COMMAND_ALLOWLIST" in run.last_error
    assert run.attempt_records.get().output_excerpt == ""


def test_parsed_command_names_the_allow_listed_path_that_runs(allowlist: list[str]) -> None:
    parameters = {"argv": ["echo", "hi"], "env": {"GREETING": "hello"}}

    params = get_runner("command").parse(parameters, tenant_id="acme")

    assert params == CommandParams(
        argv=("echo", "hi"), executable="/bin/echo", cwd=None, env={"GREETING": "hello"}, timeout_ms=60_000
    )
    assert get_runner("command").validate(parameters, tenant_id="acme") == {
        "argv": ["echo", "hi"],
        "executable": "/bin/echo",
        "cwd": None,
        "env": {"GREETING": "hello"},
        "timeoutMs": 60_000,
    }


def test_commands_are_disabled_when_the_allow_list_is_empty(settings: Any) -> None:
    settings.MINOOTS_COMMAND_ALLOWLIST = []
    with pytest.raises(ParameterError, match="disabled"):
        get_runner("command").validate({"argv": ["/bin/echo", "hi"]}, tenant_id="acme")


def test_environment_is_minimal_plus_given_variables_and_timer_identity(
    allowlist: list[str], fire_timer: FireTimer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKER_ONLY_SECRET", "do-not-leak")

    timer = drive(fire_timer(command("env", "/usr/bin/env", env={"GREETING": "hi there"})))

    lines = set(only_run(timer).attempt_records.get().output_excerpt.splitlines())
    assert "GREETING=hi there" in lines
    assert f"MINOOTS_TIMER_ID={timer.pk}" in lines
    assert "MINOOTS_TENANT_ID=acme" in lines
    names = {line.split("=", 1)[0] for line in lines}
    assert names == {"PATH", "LANG", "HOME", "GREETING", "MINOOTS_TIMER_ID", "MINOOTS_TENANT_ID"}


def test_non_zero_exit_is_retried_then_fails_with_its_exit_code_and_stderr(
    allowlist: list[str], fire_timer: FireTimer
) -> None:
    timer = drive(
        fire_timer(command("oops", "/bin/sh", "-c", "echo out; echo broken >&2; exit 3"), retry={"maxAttempts": 2})
    )

    run = only_run(timer)
    assert run.status == RunStatus.FAILED
    assert [(a.outcome, a.exit_code) for a in run.attempt_records.all()] == [(AttemptOutcome.TRANSIENT, 3)] * 2
    attempt = run.attempt_records.first()
    assert attempt is not None
    assert attempt.output_excerpt == "out\n\n--- stderr ---\nbroken\n"
    assert run.last_error == "exited with status 3"
    assert timer.failure_reason == "actions failed: oops"


def test_timeout_kills_the_whole_process_group(allowlist: list[str], fire_timer: FireTimer, tmp_path: Path) -> None:
    pid_file = tmp_path / "background.pid"
    script = f"sleep 300 & echo $! > {pid_file}; wait"

    timer = drive(fire_timer(command("stuck", "/bin/sh", "-c", script, timeoutMs=500), retry={"maxAttempts": 1}))

    run = only_run(timer)
    assert run.status == RunStatus.FAILED
    assert run.attempt_records.get().outcome == AttemptOutcome.TRANSIENT
    assert "timed out after 500 ms; process group killed" in run.last_error
    assert process_is_gone(int(pid_file.read_text()))


def test_background_process_left_by_a_finished_command_is_killed_too(
    allowlist: list[str], fire_timer: FireTimer, tmp_path: Path
) -> None:
    pid_file = tmp_path / "background.pid"

    timer = drive(fire_timer(command("leaky", "/bin/sh", "-c", f"sleep 300 & echo $! > {pid_file}")))

    assert only_run(timer).status == RunStatus.SUCCEEDED
    assert process_is_gone(int(pid_file.read_text()))


def test_large_output_is_truncated(allowlist: list[str], fire_timer: FireTimer) -> None:
    timer = drive(fire_timer(command("loud", "/bin/sh", "-c", "yes 0123456789 | head -c 1000000")))

    run = only_run(timer)
    assert run.status == RunStatus.SUCCEEDED
    excerpt = run.attempt_records.get().output_excerpt
    assert len(excerpt.encode()) <= 4096
    assert excerpt.startswith("0123456789\n")
    assert excerpt.endswith("[truncated]")


def test_cwd_is_a_directory_of_the_tenant_below_the_file_root(
    allowlist: list[str], fire_timer: FireTimer, file_root: Path
) -> None:
    (file_root / "acme" / "work").mkdir(parents=True)
    timer = drive(fire_timer(command("here", "/bin/sh", "-c", "pwd", cwd="work")))

    assert only_run(timer).attempt_records.get().output_excerpt == f"{(file_root / 'acme' / 'work').resolve()}\n"


def test_a_cwd_link_leading_outside_the_tenant_directory_is_refused_when_the_command_runs(
    allowlist: list[str], fire_timer: FireTimer, file_root: Path, tmp_path: Path
) -> None:
    (file_root / "acme").mkdir(parents=True)
    (file_root / "acme" / "escape").symlink_to(tmp_path)
    timer = drive(fire_timer(command("here", "/bin/sh", "-c", "pwd", cwd="escape")))

    run = only_run(timer)
    assert run.status == "failed"
    assert "outside" in run.last_error


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({}, "argv"),
        ({"argv": []}, "argv"),
        ({"argv": "/bin/echo hi"}, "argv"),
        ({"argv": ["/bin/echo", 1]}, "argv"),
        ({"argv": ["/bin/echo"], "cwd": "relative/dir"}, "cwd"),  # no MINOOTS_FILE_ROOT
        ({"argv": ["/bin/echo"], "cwd": "/tmp"}, "cwd"),
        ({"argv": ["/bin/echo"], "cwd": "../other-tenant"}, "cwd"),
        ({"argv": ["/bin/echo"], "env": {"BASH_ENV": "/tmp/x.sh"}}, "env"),
        ({"argv": ["/bin/echo"], "env": {"LD_PRELOAD": "/tmp/x.so"}}, "env"),
        ({"argv": ["/bin/echo"], "env": {"PYTHONSTARTUP": "/tmp/x.py"}}, "env"),
        ({"argv": ["/bin/echo"], "env": {"PATH": "/tmp"}}, "env"),
        ({"argv": ["/bin/echo"], "env": {"MINOOTS_TIMER_ID": "forged"}}, "env"),
        ({"argv": ["/bin/echo"], "env": {"BAD NAME": "x"}}, "env"),
        ({"argv": ["/bin/echo"], "env": {"N": 1}}, "env"),
        ({"argv": ["/bin/echo"], "timeoutMs": 10_000_000}, "timeoutMs"),
        ({"argv": ["/bin/echo"], "shell": True}, "shell"),
    ],
)
def test_invalid_command_parameters_name_the_field(
    allowlist: list[str], parameters: dict[str, Any], field: str
) -> None:
    with pytest.raises(ParameterError) as info:
        get_runner("command").validate(parameters, tenant_id="acme")
    assert info.value.field == field
