"""The file runner: confinement below MINOOTS_FILE_ROOT/<tenant>/, atomic write, append."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

import pytest

from actions.errors import ParameterError
from actions.models import ActionRun, AttemptOutcome, RunStatus
from actions.runners import get_runner
from actions.runners.file import FileParams
from tests.actions.conftest import FireTimer
from tests.actions.support import drive
from timers.models import TimerStatus

pytestmark = pytest.mark.django_db


def file_action(action_id: str, path: str, content: Any, mode: str = "write") -> dict[str, Any]:
    return {"id": action_id, "kind": "file", "parameters": {"path": path, "content": content, "mode": mode}}


def only_run(timer: Any) -> ActionRun:
    return ActionRun.objects.get(timer=timer)


def test_write_creates_the_file_and_its_directories_below_the_tenant_root(
    file_root: Path, fire_timer: FireTimer
) -> None:
    timer = drive(fire_timer(file_action("note", "reports/2030/today.txt", "done\n")))

    assert (file_root / "acme" / "reports" / "2030" / "today.txt").read_text() == "done\n"
    assert only_run(timer).status == RunStatus.SUCCEEDED
    assert timer.status == TimerStatus.SETTLED


def test_json_content_is_serialised(file_root: Path, fire_timer: FireTimer) -> None:
    drive(fire_timer(file_action("state", "state.json", {"ok": True, "n": [1, 2]})))

    assert json.loads((file_root / "acme" / "state.json").read_text()) == {"ok": True, "n": [1, 2]}


def test_write_replaces_the_file_atomically(file_root: Path, fire_timer: FireTimer) -> None:
    target = file_root / "acme" / "current.txt"
    target.parent.mkdir()
    target.write_text("old content")
    reader = target.open()  # a reader of the old version keeps a complete old version

    drive(fire_timer(file_action("swap", "current.txt", "new content")))

    assert reader.read() == "old content"
    reader.close()
    assert target.read_text() == "new content"
    assert sorted(p.name for p in target.parent.iterdir()) == ["current.txt"]  # no temporary left behind


def test_append_adds_to_the_end(file_root: Path, fire_timer: FireTimer) -> None:
    drive(
        fire_timer(
            file_action("one", "log.txt", "first\n", mode="append"),
            file_action("two", "log.txt", "second\n", mode="append"),
        )
    )

    assert (file_root / "acme" / "log.txt").read_text() == "first\nsecond\n"


@pytest.mark.parametrize("path", ["../x", "../../etc/passwd", "a/../../x", "/etc/passwd", "~/x", "a/..", "dir/"])
def test_paths_leaving_the_tenant_directory_are_refused_at_validation(file_root: Path, path: str) -> None:
    with pytest.raises(ParameterError) as info:
        get_runner("file").validate({"path": path, "content": "x"}, tenant_id="acme")
    assert info.value.field == "path"


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "../globex/stolen.txt"])
def test_traversal_is_refused_again_when_the_action_runs(file_root: Path, fire_timer: FireTimer, path: str) -> None:
    before = set(file_root.parent.rglob("*"))

    timer = drive(fire_timer(file_action("escape", path, "owned")))

    run = only_run(timer)
    assert run.status == RunStatus.FAILED
    assert run.attempt_records.get().outcome == AttemptOutcome.PERMANENT
    assert set(file_root.parent.rglob("*")) - {file_root / "acme"} == before
    assert timer.failure_reason == "actions failed: escape"


def test_symlinked_directory_leading_outside_is_refused(file_root: Path, fire_timer: FireTimer, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (file_root / "acme").mkdir()
    (file_root / "acme" / "door").symlink_to(outside)

    timer = drive(fire_timer(file_action("escape", "door/new/x.txt", "owned")))

    run = only_run(timer)
    assert run.status == RunStatus.FAILED
    assert "outside the tenant's directory" in run.last_error
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("mode", ["write", "append"])
def test_symlinked_file_leading_outside_is_refused(
    file_root: Path, fire_timer: FireTimer, tmp_path: Path, mode: str
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (file_root / "acme").mkdir()
    (file_root / "acme" / "link.txt").symlink_to(victim)

    timer = drive(fire_timer(file_action("escape", "link.txt", "owned", mode=mode)))

    assert only_run(timer).status == RunStatus.FAILED
    assert victim.read_text() == "precious"
    assert (file_root / "acme" / "link.txt").is_symlink()


@pytest.mark.parametrize("mode", ["write", "append"])
def test_hard_link_to_a_file_outside_is_refused(
    file_root: Path, fire_timer: FireTimer, tmp_path: Path, mode: str
) -> None:
    """A hard link inside the tenant's root to a file outside it is not followed (nor replaced)."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (file_root / "acme").mkdir()
    link = file_root / "acme" / "link.txt"
    os.link(victim, link)

    timer = drive(fire_timer(file_action("escape", "link.txt", "owned", mode=mode)))

    run = only_run(timer)
    assert run.status == RunStatus.FAILED
    assert run.attempt_records.get().outcome == AttemptOutcome.PERMANENT
    assert "'link.txt'" in run.last_error and "hard link" in run.last_error
    assert victim.read_text() == "precious"
    assert os.stat(link).st_ino == os.stat(victim).st_ino  # left as it was, not replaced
    assert sorted(p.name for p in link.parent.iterdir()) == ["link.txt"]


def test_symlink_staying_inside_the_tenant_directory_is_followed(file_root: Path, fire_timer: FireTimer) -> None:
    tenant_dir = file_root / "acme"
    (tenant_dir / "real").mkdir(parents=True)
    (tenant_dir / "alias").symlink_to(tenant_dir / "real")

    drive(fire_timer(file_action("ok", "alias/x.txt", "inside")))

    assert (tenant_dir / "real" / "x.txt").read_text() == "inside"


def test_parsed_file_parameters_carry_the_bytes_to_write(file_root: Path) -> None:
    parameters = {"path": "./notes//today.json", "content": {"done": True}, "mode": "append"}

    params = get_runner("file").parse(parameters, tenant_id="acme")

    assert isinstance(params, FileParams)
    assert (params.path, params.content, params.mode) == ("notes/today.json", {"done": True}, "append")
    assert params.data == json.dumps({"done": True}, indent=2).encode()
    assert get_runner("file").validate(parameters, tenant_id="acme") == {
        "path": "notes/today.json",
        "content": {"done": True},
        "mode": "append",
    }


def test_file_actions_are_disabled_without_a_root(settings: Any) -> None:
    settings.MINOOTS_FILE_ROOT = ""
    with pytest.raises(ParameterError, match="MINOOTS_FILE_ROOT"):
        get_runner("file").validate({"path": "x.txt", "content": "x"}, tenant_id="acme")


def test_content_over_one_mib_is_refused(file_root: Path) -> None:
    with pytest.raises(ParameterError) as info:
        get_runner("file").validate({"path": "big.txt", "content": "x" * (1024 * 1024 + 1)}, tenant_id="acme")
    assert info.value.field == "content"


def test_append_that_would_exceed_one_mib_fails_and_leaves_the_file_alone(
    file_root: Path, fire_timer: FireTimer
) -> None:
    target = file_root / "acme" / "grow.txt"
    target.parent.mkdir()
    target.write_bytes(b"x" * (1024 * 1024 - 10))

    timer = drive(fire_timer(file_action("grow", "grow.txt", "y" * 20, mode="append")))

    assert only_run(timer).status == RunStatus.FAILED
    assert os.path.getsize(target) == 1024 * 1024 - 10


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"content": "x"}, "path"),
        ({"path": "x.txt"}, "content"),
        ({"path": "x.txt", "content": "x", "mode": "truncate"}, "mode"),
        ({"path": "x.txt", "content": "x", "owner": "root"}, "owner"),
        ({"path": "a\x00b", "content": "x"}, "path"),
    ],
)
def test_invalid_file_parameters_name_the_field(file_root: Path, parameters: dict[str, Any], field: str) -> None:
    with pytest.raises(ParameterError) as info:
        get_runner("file").validate(parameters, tenant_id="acme")
    assert info.value.field == field


@pytest.mark.parametrize("mode", ["write", "append"])
def test_a_fifo_in_the_tenants_directory_is_refused_at_once_not_waited_on(
    file_root: Path, fire_timer: FireTimer, mode: str
) -> None:
    """Opening a FIFO for writing waits for a reader: the action's thread would hang for good."""
    (file_root / "acme").mkdir()
    fifo = file_root / "acme" / "pipe"
    os.mkfifo(fifo)

    def hung(*_: Any) -> None:
        raise AssertionError("the file action hung on the FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        timer = drive(fire_timer(file_action("pipe", "pipe", "data", mode=mode)))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)

    run = only_run(timer)
    assert run.status == RunStatus.FAILED
    assert run.attempt_records.get().outcome == AttemptOutcome.PERMANENT
    assert run.last_error == "path 'pipe' is not a regular file"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # left as it was
