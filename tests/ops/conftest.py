"""Fixtures for the operations tests: a copy of the repository and supervised process trees.

``make run`` starts a supervisor (runall) whose children live in process groups of their own,
so killing the group we started is not enough: ``Supervised.stop`` first records every
descendant, stops the tree gracefully, then SIGKILLs each recorded group and pid, pass or fail.
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
import requests

from tests.processes import print_logs_if_failed

ROOT = Path(__file__).resolve().parent.parent.parent

# Never copied: the virtualenv (linked instead), local data, VCS and caches.
_COPY_IGNORE = shutil.ignore_patterns(
    ".venv",
    ".data",
    ".git",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    ".mypy_cache",
    ".env",
    "node_modules",
    "out",
)

# Variables that would make a child use the test session's services or a parent make's jobserver.
_SCRUBBED = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "MINOOTS_DATA_DIR",
    "SECRET_KEY",
    "PROMETHEUS_MULTIPROC_DIR",
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "MINOOTS_METRICS_TOKEN",
)


def clean_env(**overrides: str) -> dict[str, str]:
    """The environment of a fresh shell: no database, broker or data directory configured."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def repo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working tree as a fresh clone would have it, sharing this checkout's virtualenv."""
    dest = tmp_path_factory.mktemp("clone") / "minoots"
    shutil.copytree(ROOT, dest, ignore=_COPY_IGNORE, symlinks=True)
    (dest / ".venv").symlink_to(ROOT / ".venv", target_is_directory=True)
    return dest


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    tree = _children_map()
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class Tree:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    known: set[int] = field(default_factory=set)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def remember(self) -> list[int]:
        """Record the current descendants (they outlive the link to us once their parent dies)."""
        pids = descendants(self.popen.pid)
        self.known.update(pids)
        return pids

    def terminate(self, sig: int = signal.SIGTERM, *, timeout: float = 40) -> int | None:
        """Signal our process group (SIGINT is what a terminal's Ctrl-C sends), wait for the whole tree."""
        self.remember()
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 5
        while any(alive(p) for p in self.known) and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.remember()
        targets = {self.popen.pid, *self.known}
        for pid in targets:
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass


@dataclass
class Supervised:
    workdir: Path
    trees: list[Tree] = field(default_factory=list)

    def start(self, name: str, argv: list[str], *, cwd: Path, env: dict[str, str]) -> Tree:
        log_path = self.workdir / f"{name}-{len(self.trees)}.log"
        with open(log_path, "wb") as out:
            popen = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        tree = Tree(name, popen, log_path)
        self.trees.append(tree)
        return tree

    def kill_all(self) -> None:
        for tree in reversed(self.trees):
            tree.kill()


@pytest.fixture
def supervised(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Supervised]:
    sup = Supervised(workdir=tmp_path)
    try:
        yield sup
    finally:
        sup.kill_all()
        print_logs_if_failed(request, [(tree.name, tree.output()) for tree in sup.trees])


def wait_http_ok(url: str, tree: Tree, *, timeout: float = 60) -> requests.Response:
    """Poll ``url`` until it answers 200; fail early if the process tree exited."""
    deadline = time.monotonic() + timeout
    while True:
        if tree.popen.poll() is not None:
            raise AssertionError(f"{tree.name} exited with {tree.popen.returncode}:\n{tree.output()[-4000:]}")
        try:
            response = requests.get(url, timeout=2)
            if response.status_code == 200:
                tree.remember()
                return response
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer 200 within {timeout}s:\n{tree.output()[-4000:]}")
        time.sleep(0.2)
