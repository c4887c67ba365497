"""The firing worker comes first on the CPU: the web and action worker processes run
MINOOTS_YIELD_NICE nice levels below it (default 5; 0 leaves every process at one priority).

On a machine with few cores a run of creates or of webhook deliveries can take every core, and
a tick due meanwhile waits for the scheduler to give the firing worker one: that wait is
lateness. A higher nice value only matters when the CPU is short (an idle core still goes to
whoever asks); then Linux gives a process 5 levels down about a third of the share of one at
the firing worker's level, so the firing worker, which needs little CPU, runs when it is due.
Nice values only go up without privileges, so the others step down rather than the firing
worker up. Linux keeps the value per thread and new threads inherit it: it is set before the
worker starts its pool and before gunicorn's worker serves a request.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)

FIRING_QUEUE = "timers"  # CELERY_TASK_ROUTES: the queue of timers.* tasks
DEFAULT_YIELD_NICE = 5


def yield_nice() -> int:
    raw = os.environ.get("MINOOTS_YIELD_NICE", "").strip()
    if not raw:
        return DEFAULT_YIELD_NICE
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"MINOOTS_YIELD_NICE must be an integer from 0 to 19, not {raw!r}") from None
    if not 0 <= value <= 19:
        raise SystemExit(f"MINOOTS_YIELD_NICE must be an integer from 0 to 19, not {raw!r}")
    return value


# The nice value the process started with, kept across Celery's SIGHUP restart (an execv that
# keeps the environment and the nice value): the step down is taken from it, not again.
_BASE_ENV = "MINOOTS_STARTED_AT_NICE"


def yield_to_firing(role: str) -> None:
    """Run MINOOTS_YIELD_NICE levels below the nice value this process started with (called
    at its start; a process that restarts itself in place does not step down again)."""
    increment = yield_nice()
    if increment == 0:
        return
    base = int(os.environ.setdefault(_BASE_ENV, str(os.getpriority(os.PRIO_PROCESS, 0))))
    target = min(19, base + increment)
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) < target:
            os.setpriority(os.PRIO_PROCESS, 0, target)
    except OSError as exc:  # a sandbox refusing setpriority: run at the usual priority
        log.warning("could not lower the %s process's priority: %s", role, exc)
        return
    log.info("%s process runs at nice %d, below the firing worker (MINOOTS_YIELD_NICE)", role, target)


def consumes_firing_queue(queues: Any) -> bool:
    """Whether a worker started with ``-Q queues`` (None or empty: every queue) fires timers."""
    if not queues:
        return True
    names = queues.split(",") if isinstance(queues, str) else list(queues)
    return FIRING_QUEUE in {str(name).strip() for name in names}
