"""``command``: run an allow-listed executable, never through a shell.

Off unless ``MINOOTS_COMMAND_ALLOWLIST`` lists the executable's absolute path. ``argv[0]`` is
either one of those paths or the bare name of one of them (``echo`` for ``/bin/echo``); the
listed path is what runs, never a PATH lookup. The process gets its own session (hence its
own process group), a minimal environment, and on timeout the whole group is killed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.conf import settings

from actions.errors import ActionError, ParameterError
from actions.runners.base import ActionContext, ActionResult, Runner, is_utf8
from actions.runners.file import tenant_root

DEFAULT_TIMEOUT_MS = 60_000
# Stays below the Celery soft time limit (300 s) and the default action lease (5 min).
MAX_TIMEOUT_MS = 240_000
OUTPUT_CAP = 64 * 1024
MAX_ARGS = 256
MAX_ARG_LENGTH = 32 * 1024
MAX_ENV = 100
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
RESERVED_ENV = frozenset({"MINOOTS_TIMER_ID", "MINOOTS_TENANT_ID", "HOME"})
# Variables that make the dynamic loader, a shell or an interpreter load code of the caller's
# choosing (BASH_ENV=<a file written by a file action> runs it in any bash script): an
# allow-listed executable must stay the code that runs. A deny-list cannot know every program's
# variables, so allow-list only executables that take no code from their environment.
DENIED_ENV = frozenset(
    {
        "PATH",
        "IFS",
        "ENV",
        "BASH_ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "PS4",
        "PROMPT_COMMAND",
        "CDPATH",
        "GLOBIGNORE",
        "CLASSPATH",
        "GCONV_PATH",
        "LOCPATH",
        "NLSPATH",
        "HOSTALIASES",
        "RESOLV_HOST_CONF",
        "TMPDIR",
        "EDITOR",
        "VISUAL",
        "PAGER",
        "SHELL",
    }
)
DENIED_ENV_PREFIXES = (
    "LD_",
    "DYLD_",
    "BASH_FUNC_",
    "PYTHON",
    "PERL",
    "RUBY",
    "NODE_",
    "NPM_",
    "GIT_",
    "JAVA",
    "_JAVA",
    "JDK_",
    "LUA_",
    "TCL",
    "MALLOC_",
    "GLIBC_",
    "GEM_",
    "BUNDLE_",
    "PHP",
    "R_",
    "JULIA_",
    "DOTNET_",
    "CORECLR_",
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def _confined_cwd(tenant_id: str, relative: str) -> str:
    """The tenant's directory ``relative`` below MINOOTS_FILE_ROOT/<tenant>/, links resolved."""
    root = tenant_root(tenant_id)
    resolved = (root / relative).resolve()
    if not resolved.is_relative_to(root):
        raise ActionError(f"cwd '{relative}' leads outside the tenant's directory", permanent=True)
    if not resolved.is_dir():
        raise ActionError(f"cwd '{relative}' is not a directory below the tenant's file root", permanent=True)
    return str(resolved)


def allowed_executable(name: str) -> str | None:
    """The allow-listed absolute path ``name`` designates, or None.

    An absolute ``name`` must be listed as such (after normalising ``//`` and ``.``); a bare
    name matches a listed path with that base name. Relative paths with a '/' never match.
    """
    allowlist = [os.path.normpath(p) for p in settings.MINOOTS_COMMAND_ALLOWLIST if os.path.isabs(p)]
    if os.path.isabs(name):
        wanted = os.path.normpath(name)
        return wanted if wanted in allowlist else None
    if "/" in name:
        return None
    return next((p for p in allowlist if os.path.basename(p) == name), None)


class _CappedReader(threading.Thread):
    """Drains a pipe so the child never blocks on a full pipe; keeps the first OUTPUT_CAP bytes."""

    def __init__(self, pipe: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.data = bytearray()
        self.truncated = False

    def run(self) -> None:
        try:
            while chunk := self.pipe.read1(65536):  # type: ignore[attr-defined]
                room = OUTPUT_CAP - len(self.data)
                if len(chunk) > room:
                    self.truncated = True
                self.data += chunk[: max(room, 0)]
        except (OSError, ValueError):
            pass

    def text(self) -> str:
        # surrogateescape keeps bytes that are not UTF-8; the recording boundary stores them as \xNN.
        return self.data.decode("utf-8", errors="surrogateescape") + ("\n[truncated]" if self.truncated else "")


def _wait_unreaped(pid: int, timeout: float) -> bool:
    """Wait for ``pid`` to exit without reaping it; True if it exited in time.

    Left as a zombie, the child keeps its process group id reserved, so the killpg that
    follows cannot hit an unrelated group that reused the number.
    """
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining, 0.05))
        delay *= 2


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass(frozen=True)
class CommandParams:
    argv: tuple[str, ...]  # as given; argv[0] names the executable
    executable: str  # the allow-listed absolute path argv[0] designates: what runs
    cwd: str | None  # relative to the tenant's directory; None: a scratch directory
    env: dict[str, str]
    timeout_ms: int

    def to_json(self) -> dict[str, Any]:
        return {
            "argv": list(self.argv),
            "executable": self.executable,
            "cwd": self.cwd,
            "env": dict(self.env),
            "timeoutMs": self.timeout_ms,
        }


class CommandRunner(Runner[CommandParams]):
    kind = "command"

    def parse(self, parameters: dict[str, Any], *, tenant_id: str) -> CommandParams:
        unknown = sorted(set(parameters) - {"argv", "cwd", "env", "timeoutMs"})
        if unknown:
            raise ParameterError(unknown[0], "unknown parameter; allowed: argv, cwd, env, timeoutMs")
        if not settings.MINOOTS_COMMAND_ALLOWLIST:
            raise ParameterError("argv", "command actions are disabled (MINOOTS_COMMAND_ALLOWLIST is empty)")
        argv = parameters.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise ParameterError("argv", "must be a non-empty list of strings")
        if not all(is_utf8(a) for a in argv):
            raise ParameterError("argv", "arguments must be valid Unicode text")
        if len(argv) > MAX_ARGS or any(len(a) > MAX_ARG_LENGTH or "\x00" in a for a in argv):
            raise ParameterError("argv", f"at most {MAX_ARGS} arguments of {MAX_ARG_LENGTH} characters, no NUL bytes")
        executable = allowed_executable(argv[0])
        if executable is None:
            raise ParameterError("argv", f"'{argv[0][:200]}' is not in MINOOTS_COMMAND_ALLOWLIST")
        cwd = parameters.get("cwd")
        if cwd is not None:
            if not isinstance(cwd, str) or not cwd or "\x00" in cwd or not is_utf8(cwd):
                raise ParameterError("cwd", "must be a directory path relative to the tenant's file root")
            if os.path.isabs(cwd) or ".." in Path(cwd).parts:
                raise ParameterError("cwd", "must be relative to MINOOTS_FILE_ROOT/<tenant>/, without '..'")
            if not settings.MINOOTS_FILE_ROOT:
                raise ParameterError("cwd", "needs MINOOTS_FILE_ROOT (commands otherwise run in a scratch directory)")
        env = parameters.get("env") or {}
        if not isinstance(env, dict) or len(env) > MAX_ENV:
            raise ParameterError("env", f"must be an object of at most {MAX_ENV} names to string values")
        for name, value in env.items():
            if not _ENV_NAME.match(name):
                raise ParameterError("env", f"'{name[:40]}' is not a valid variable name")
            if name in RESERVED_ENV:
                raise ParameterError("env", f"'{name}' is set by MINOOTS")
            if name.upper() in DENIED_ENV or name.upper().startswith(DENIED_ENV_PREFIXES):
                raise ParameterError("env", f"'{name}' could make the command load other code; it is refused")
            if not isinstance(value, str) or "\x00" in value or not is_utf8(value):
                raise ParameterError("env", f"'{name}' must have a string value")
        timeout_ms = parameters.get("timeoutMs", DEFAULT_TIMEOUT_MS)
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or not 1 <= timeout_ms <= MAX_TIMEOUT_MS:
            raise ParameterError("timeoutMs", f"must be an integer between 1 and {MAX_TIMEOUT_MS}")
        return CommandParams(argv=tuple(argv), executable=executable, cwd=cwd, env=dict(env), timeout_ms=timeout_ms)

    def attempt(self, params: CommandParams, context: ActionContext) -> ActionResult:
        executable = params.executable
        if not (os.path.isfile(executable) and os.access(executable, os.X_OK)):
            raise ActionError(f"{executable} is allow-listed but not an executable file", permanent=True)
        with tempfile.TemporaryDirectory(prefix="minoots-cmd-") as scratch:
            cwd = scratch if params.cwd is None else _confined_cwd(context.tenant_id, params.cwd)
            env = {
                **BASE_ENV,
                "HOME": scratch,
                **params.env,
                "MINOOTS_TIMER_ID": context.timer_id,
                "MINOOTS_TENANT_ID": context.tenant_id,
            }
            return self._execute([executable, *params.argv[1:]], cwd, env, params.timeout_ms)

    @staticmethod
    def _execute(args: list[str], cwd: str, env: dict[str, str], timeout_ms: int) -> ActionResult:
        try:
            proc = subprocess.Popen(
                args,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                shell=False,
            )
        except OSError as exc:
            raise ActionError(f"could not start {args[0]}: {exc}", permanent=True) from exc
        assert proc.stdout is not None and proc.stderr is not None
        readers = [_CappedReader(proc.stdout), _CappedReader(proc.stderr)]
        for reader in readers:
            reader.start()
        timed_out = True
        try:
            timed_out = not _wait_unreaped(proc.pid, timeout_ms / 1000)
        finally:
            # The child is its session's leader: its pid is the group id. Killing the group
            # also ends whatever it left running in the background (which would hold our pipes).
            _kill_group(proc.pid)
            proc.wait()
            for reader in readers:
                reader.join(timeout=5)
            proc.stdout.close()
            proc.stderr.close()
        stdout, stderr = readers[0].text(), readers[1].text()
        output = (
            stdout if not stderr else f"{stdout}\n--- stderr ---\n{stderr}" if stdout else f"--- stderr ---\n{stderr}"
        )
        if timed_out:
            raise ActionError(f"timed out after {timeout_ms} ms; process group killed", permanent=False, output=output)
        code = proc.returncode
        if code != 0:
            reason = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
            raise ActionError(reason, permanent=False, exit_code=code, output=output)
        return ActionResult(summary="exit 0", exit_code=0, output=output)
