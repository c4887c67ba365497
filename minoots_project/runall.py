"""Run the whole service on one machine: web (gunicorn), the firing worker, an action worker and beat.

``make run`` migrates, then runs ``python -m minoots_project.runall``. This supervisor:

- collects static files (gunicorn serves the admin's through WhiteNoise);
- sets PROMETHEUS_MULTIPROC_DIR (default ``$MINOOTS_DATA_DIR/prometheus``, wiped here) so the
  workers' and beat's metrics reach the web's /metrics;
- runs two workers: ``firing`` consumes only the ``timers`` queue (fire_due, reconcile) on a
  small thread pool, ``worker`` only ``actions``, so actions that hang on the network can
  occupy every action thread and still not delay a single fire;
- starts each child in its own process group and prints every line of its output prefixed
  with its name (with LOG_FORMAT=json: as a ``"service"`` field of the JSON line instead);
- on Ctrl-C or SIGTERM sends SIGTERM to every group, waits MINOOTS_SHUTDOWN_GRACE seconds
  (default 30: the workers finish their running tasks and hand back the rest), then SIGKILLs
  what is left, and exits 0;
- when a child dies on its own (crashed, killed, or exited, whatever its status), says so,
  SIGKILLs what is left of its process group, and starts it again after a backoff: 1 s,
  doubling up to 30 s while it keeps dying, back to 1 s once it had run 60 s. The others go on
  meanwhile: a dead worker does not take the web down.

It uses whatever DATABASE_URL / CELERY_BROKER_URL say: the embedded default (SQLite and the
filesystem broker under MINOOTS_DATA_DIR) when they are unset, Postgres and Redis otherwise.

Why not a Procfile runner: honcho 2.0.0 (``honcho/manager.py``) SIGKILLs after a fixed
``KILL_WAIT = 5`` seconds (nickstenning/honcho#189) counted from the first child's exit, so a
worker finishing its tasks is cut after 5 s, and when every child ignores SIGTERM nothing is
ever killed; a second Ctrl-C does nothing; it exits 130 / 143 on a requested stop and with the
dead child's own status (0 included) otherwise; its children outlive it when it is killed.
Nor does honcho restart a crashed child. supervisord and circus do, but each is a daemon of its
own with an ini file, its own log handling (not our one prefixed or JSON line per child) and its
own stop sequence; the restart loop here is a few lines on top of the process groups this module
already keeps, so it is written here. tests/ops/test_runall.py and
tests/ops/test_supervisor_restarts.py pin each of these behaviours.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from minoots_project.logconfig import redact

NAMES = ("web", "firing", "worker", "beat")

# Threads of the firing worker: fire_due claims in bulk statements and only publishes the action
# runs, so a few threads keep up with bursts (bench/timers.py); actions never run there.
FIRING_CONCURRENCY = 4

# A child that dies on its own is started again after RESTART_FIRST_DELAY seconds, doubling at
# each death in a row up to RESTART_MAX_DELAY; once it has run RESTART_STABLE_AFTER seconds its
# next death starts from the first delay again.
RESTART_FIRST_DELAY = 1.0
RESTART_MAX_DELAY = 30.0
RESTART_STABLE_AFTER = 60.0


@dataclass
class Backoff:
    """How long to wait before starting a child again that died ``ran_for`` seconds after its start."""

    first: float = RESTART_FIRST_DELAY
    most: float = RESTART_MAX_DELAY
    stable_after: float = RESTART_STABLE_AFTER
    deaths_in_a_row: int = 0

    def delay(self, *, ran_for: float) -> float:
        if ran_for >= self.stable_after:
            self.deaths_in_a_row = 0
        delay: float = min(self.most, self.first * 2.0**self.deaths_in_a_row)
        self.deaths_in_a_row += 1
        return delay


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    reader: threading.Thread | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    backoff: Backoff = field(default_factory=Backoff)
    started_at: float = 0.0
    # Monotonic time at which a dead child is started again; None while it runs.
    restart_at: float | None = None
    restarts: int = 0


class Output:
    """Serialises the children's lines onto our stdout, each marked with the child's name."""

    def __init__(self, *, json_mode: bool, stream: IO[str] | None = None) -> None:
        self.json_mode = json_mode
        self.stream = stream or sys.stdout
        self.width = max(len(n) for n in (*NAMES, "runall"))
        self.lock = threading.Lock()

    def format(self, name: str, line: str) -> str:
        line = redact(line.rstrip("\r\n"))
        if not self.json_mode:
            return f"{name:<{self.width}} | {line}"
        obj: Any = None
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
        if isinstance(obj, dict):
            return json.dumps({"service": name, **obj})
        # Not a log record (a banner, a print, a crash dump): still one JSON object per line.
        return json.dumps({"service": name, "message": line})

    def write(self, name: str, line: str) -> None:
        text = self.format(name, line)
        with self.lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def pump(self, name: str, pipe: IO[bytes]) -> None:
        for raw in iter(pipe.readline, b""):
            self.write(name, raw.decode("utf-8", errors="replace"))
        pipe.close()


def _load_libc() -> Any:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # not Linux
        return None


# Loaded here, in the parent: between fork and exec a child must not import or dlopen, since
# another thread (an output pump, on a restart) may have held the lock those take.
_LIBC = _load_libc()


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the supervisor itself is killed (Linux)."""
    if _LIBC is not None:
        pr_set_pdeathsig = 1
        _LIBC.prctl(pr_set_pdeathsig, signal.SIGTERM)


def commands(*, python: str, data_dir: Path, log_level: str, concurrency: int) -> dict[str, list[str]]:
    """The children's command lines (also documented in README and compose.yaml)."""
    celery = [python, "-m", "celery", "-A", "minoots_project"]

    def worker(queue: str, threads: int, node: str) -> list[str]:
        return [
            *celery,
            "worker",
            "-Q",
            queue,
            # Both wait on the database or the network: threads, not processes.
            "--pool",
            "threads",
            "--concurrency",
            str(threads),
            # Two workers on one host: each its own node name (remote control, `inspect ping`).
            "--hostname",
            f"{node}@%h",
            "--loglevel",
            log_level,
            # No worker-to-worker chatter: MINOOTS needs none, and on the filesystem broker each
            # restart would leave a dead fan-out queue that keeps receiving heartbeats.
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]

    return {
        "web": [python, "-m", "gunicorn", "-c", "minoots_project/gunicorn.conf.py", "minoots_project.wsgi"],
        # Firing never waits behind an action: this worker consumes the timers queue only.
        "firing": worker("timers", FIRING_CONCURRENCY, "firing"),
        "worker": worker("actions", concurrency, "worker"),
        "beat": [*celery, "beat", "--loglevel", log_level, "--schedule", str(data_dir / "celerybeat-schedule")],
    }


class Supervisor:
    def __init__(self, children: Sequence[Child], *, output: Output, env: dict[str, str], cwd: Path, grace: float):
        self.children = list(children)
        self.output = output
        self.env = env
        self.cwd = cwd
        self.grace = grace
        self.stop_requested: int | None = None
        self.force = False

    def say(self, message: str) -> None:
        self.output.write("runall", message)

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        child.proc = subprocess.Popen(
            child.argv,
            cwd=self.cwd,
            env={**self.env, **child.extra_env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,  # own group: we decide when it gets a signal, and we reach its children
            # One prctl call, nothing that takes a lock: the pump threads already run on a restart.
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        assert child.proc.stdout is not None
        child.reader = threading.Thread(
            target=self.output.pump, args=(child.name, child.proc.stdout), name=f"pump-{child.name}", daemon=True
        )
        child.reader.start()
        verb = "started" if child.restarts == 0 else f"restarted (restart {child.restarts})"
        self.say(f"{verb} {child.name} (pid {child.proc.pid}): {' '.join(child.argv[1:])}")

    def _on_child_exit(self, child: Child) -> None:
        """A child died on its own: clear what is left of its group and schedule its restart."""
        assert child.proc is not None
        ran_for = time.monotonic() - child.started_at
        # Grandchildren that outlived their leader (gunicorn workers) would hold its port.
        self._signal_group(child, signal.SIGKILL)
        if child.reader is not None:
            child.reader.join(timeout=2)  # its last lines (a traceback) come before ours
        delay = child.backoff.delay(ran_for=ran_for)
        child.restart_at = time.monotonic() + delay
        child.restarts += 1
        self.say(
            f"{child.name} exited unexpectedly with code {child.proc.returncode} after {ran_for:.1f}s; "
            f"restarting it in {delay:g}s"
        )

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.stop_requested is not None and signum == signal.SIGINT:
            # A second Ctrl-C: do not wait for the grace period. (Not a second SIGTERM: make
            # forwards the SIGTERM its process group already delivered to us.)
            self.force = True
        self.stop_requested = self.stop_requested or signum

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        self.start()
        while self.stop_requested is None:
            for child in self.children:
                if self.stop_requested is not None:
                    break
                assert child.proc is not None
                if child.restart_at is None:
                    if child.proc.poll() is not None:
                        self._on_child_exit(child)
                elif time.monotonic() >= child.restart_at:
                    self._spawn(child)
            time.sleep(0.1)
        self.say(f"got {signal.Signals(self.stop_requested or signal.SIGTERM).name}; stopping everything")
        self.stop()
        return 0

    def _signal_group(self, child: Child, sig: int) -> None:
        assert child.proc is not None
        try:
            os.killpg(child.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                self._signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline and not self.force:
            if all(c.proc is None or c.proc.poll() is not None for c in self.children):
                break
            time.sleep(0.1)
        for child in self.children:
            if child.proc is None:
                continue
            if child.proc.poll() is None:
                self.say(f"{child.name} still running after {self.grace:g}s; killing it")
            # Also reaches grandchildren that outlived their leader (gunicorn workers).
            self._signal_group(child, signal.SIGKILL)
            child.proc.wait()
        for child in self.children:
            if child.reader is not None:
                child.reader.join(timeout=2)
        summary = ", ".join(f"{c.name}={c.proc.returncode}" for c in self.children if c.proc is not None)
        self.say(f"stopped ({summary})")


def _prepare_metrics_dir(data_dir: Path) -> str:
    path = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or data_dir / "prometheus")
    # Samples of a previous run belong to dead processes: start from zero.
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "minoots_project.settings")
    # Reading the settings also loads .env into os.environ, which the children inherit.
    from django.conf import settings

    data_dir = Path(settings.DATA_DIR)
    base_dir = Path(settings.BASE_DIR)
    output = Output(json_mode=settings.LOG_FORMAT == "json")
    env = dict(os.environ)
    env["PROMETHEUS_MULTIPROC_DIR"] = _prepare_metrics_dir(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PORT", "8000")

    mode = "embedded (SQLite + filesystem broker)" if settings.EMBEDDED_DATABASE else "external database"
    output.write("runall", f"data directory {data_dir}; {mode}; web on http://127.0.0.1:{env['PORT']}/")

    collect = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=base_dir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in (collect.stdout + collect.stderr).splitlines():
        output.write("runall", line)
    if collect.returncode != 0:
        output.write("runall", f"collectstatic failed with code {collect.returncode}")
        return 1

    argvs = commands(
        python=sys.executable,
        data_dir=data_dir,
        log_level=settings.LOG_LEVEL,
        concurrency=int(os.environ.get("CELERY_WORKER_CONCURRENCY", "16")),
    )
    children = [Child(name, argvs[name]) for name in NAMES]
    grace = float(os.environ.get("MINOOTS_SHUTDOWN_GRACE", "30"))
    return Supervisor(children, output=output, env=env, cwd=base_dir, grace=grace).run()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before the children started (during collectstatic)
        sys.exit(130)
