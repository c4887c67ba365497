"""``minoots doctor``: is this installation working? One line per check, each saying what to do.

Exit 1 when any check finds a problem. Every probe is bounded (the broker and the workers by
``--timeout``), so doctor answers within seconds even when a dependency hangs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError
from django.utils import timezone
from kombu.exceptions import ChannelError
from kombu.utils.url import maybe_sanitize_url

from actions import selectors as action_selectors
from minoots_project.celery import app
from minoots_project.health import check_broker, check_database, check_migrations
from timers import selectors
from timers.management.cli.output import Verb, table, utc, write_json
from timers.models import TimerStatus
from timers.reconciler_status import reconcile_pass_last

QUEUES = ("timers", "actions")
OK, PROBLEM, UNKNOWN = "ok", "problem", "unknown"
CLOCK_TOLERANCE = timedelta(seconds=1)


@dataclass
class Check:
    name: str
    status: str
    detail: str
    advice: str = ""


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _broker_url() -> str:
    return str(maybe_sanitize_url(app.conf.broker_url or ""))


def check_db() -> Check:
    problem = check_database()
    if problem:
        return Check("database", PROBLEM, f"does not answer ({problem})", "check DATABASE_URL and that Postgres is up")
    return Check("database", OK, "answers")


def check_schema() -> Check:
    problem = check_migrations()
    if problem:
        return Check("migrations", PROBLEM, problem, "run: manage.py migrate")
    return Check("migrations", OK, "all applied")


def check_redis() -> Check:
    problem = check_broker()
    if problem:
        return Check(
            "broker",
            PROBLEM,
            f"{_broker_url()} does not answer ({problem})",
            "check CELERY_BROKER_URL and that Redis runs; timers wait safely in the database meanwhile",
        )
    return Check("broker", OK, f"{_broker_url()} answers")


def check_workers(timeout: float) -> Check:
    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception as exc:
        return Check("workers", UNKNOWN, f"could not ask them ({type(exc).__name__})", "fix the broker first")
    by_queue: dict[str, list[str]] = {q: [] for q in QUEUES}
    for node, queues in sorted(replies.items()):
        for queue in queues or []:
            if queue.get("name") in by_queue:
                by_queue[queue["name"]].append(node)
    missing = [q for q, nodes in by_queue.items() if not nodes]
    seen = "; ".join(f"{q}: {', '.join(nodes) or 'none'}" for q, nodes in by_queue.items())
    if missing:
        advice = {
            "timers": "start a firing worker: celery -A minoots_project worker -Q timers --pool threads",
            "actions": "start an action worker: celery -A minoots_project worker -Q actions --pool threads",
        }
        return Check(
            "workers",
            PROBLEM,
            f"no worker answered within {timeout:g} s for queue {', '.join(missing)} ({seen})",
            "; ".join(advice[q] for q in missing),
        )
    return Check("workers", OK, f"answering: {seen}")


def check_beat(now: datetime) -> Check:
    try:
        last, last_work = reconcile_pass_last()
    except Exception as exc:
        return Check("beat", UNKNOWN, f"the cache does not answer ({type(exc).__name__})", "check Redis")
    interval = settings.MINOOTS_RECONCILE_INTERVAL.total_seconds()
    if last is None:
        return Check(
            "beat",
            PROBLEM,
            "no reconciler pass recorded",
            "start beat (celery -A minoots_project beat) and a firing worker (-Q timers), which runs the passes",
        )
    at = datetime.fromisoformat(str(last["at"]))
    age = (now - at).total_seconds()
    work = ""
    if last_work is not None:
        done = ", ".join(
            f"{k} {last_work[k]}"
            for k in ("armed", "ticksRepublished", "repaired", "runsRecovered")
            if last_work.get(k)
        )
        work = f"; last repairs at {utc(datetime.fromisoformat(str(last_work['at'])))}: {done}"
    if age > 3 * interval + 10:
        return Check(
            "beat",
            PROBLEM,
            f"the reconciler's last pass was {_age(age)} ago (every {interval:g} s expected){work}",
            "start beat (celery -A minoots_project beat) and check the firing worker (-Q timers) runs its passes",
        )
    return Check("beat", OK, f"last reconciler pass {_age(max(age, 0))} ago{work}")


def check_clock() -> Check:
    before = time.time()
    db_now = selectors.database_clock()
    after = time.time()
    if db_now is None:
        return Check("clock", OK, "SQLite: the database uses this host's clock")
    offset = db_now.timestamp() - (before + after) / 2
    text = f"database clock {abs(offset) * 1000:.0f} ms {'ahead of' if offset > 0 else 'behind'} this host"
    if abs(offset) > CLOCK_TOLERANCE.total_seconds():
        return Check(
            "clock",
            PROBLEM,
            text,
            "synchronise both clocks (NTP): timers fire by the database clock, API times come from the hosts'",
        )
    return Check("clock", OK, text)


def check_overdue(now: datetime) -> Check:
    grace = settings.MINOOTS_REPAIR_GRACE
    armed, oldest_armed = selectors.timers_overdue(status=TimerStatus.ARMED, before=now - grace)
    # A scheduled timer is armed a horizon before its fireAt: one still scheduled after it is
    # due means no reconciler pass armed it.
    scheduled, oldest_scheduled = selectors.timers_overdue(status=TimerStatus.SCHEDULED, before=now - grace)
    if not armed and not scheduled:
        return Check("overdue timers", OK, f"none pending past its fireAt by more than {grace.total_seconds():g} s")
    parts, advice = [], []
    if armed and oldest_armed is not None:
        parts.append(f"{armed} armed, the oldest {_age((now - oldest_armed).total_seconds())} late")
        advice.append("check that a firing worker consumes queue timers; the reconciler (beat) repairs lost ticks")
    if scheduled and oldest_scheduled is not None:
        parts.append(f"{scheduled} still scheduled, the oldest {_age((now - oldest_scheduled).total_seconds())} late")
        advice.append("start beat: nothing arms timers due beyond the horizon without it")
    return Check("overdue timers", PROBLEM, "; ".join(parts), "; ".join(advice))


def check_stuck_runs(now: datetime) -> Check:
    count, oldest = action_selectors.runs_stuck(now=now)
    if not count or oldest is None:
        return Check("stuck runs", OK, "no action run is running past its lease")
    return Check(
        "stuck runs",
        PROBLEM,
        f"{count} action run(s) running past their lease, the oldest by {_age((now - oldest).total_seconds())}",
        "their worker died mid-attempt; the reconciler (beat) re-queues them: check beat and the action workers",
    )


def check_queues(limit: int, timeout: float) -> Check:
    depths: dict[str, int] = {}
    try:
        with app.connection_for_write(connect_timeout=timeout) as conn:
            channel: Any = conn.default_channel  # kombu's virtual channel: queue_declare(passive) counts
            for queue in QUEUES:
                try:
                    depths[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
                except ChannelError:
                    depths[queue] = 0  # never declared, or Redis dropped the empty list: nothing waits
    except Exception as exc:
        return Check("queues", UNKNOWN, f"could not read them ({type(exc).__name__})", "fix the broker first")
    text = ", ".join(f"{q} {n}" for q, n in depths.items()) + " messages waiting"
    backed_up = [q for q, n in depths.items() if n > limit]
    if backed_up:
        return Check(
            "queues",
            PROBLEM,
            f"{text} (more than {limit} in {', '.join(backed_up)})",
            "the workers do not keep up: check they run and consume, or add workers of that queue",
        )
    return Check("queues", OK, text)


def run_checks(*, timeout: float, max_queue_depth: int) -> list[Check]:
    checks = [check_db()]
    database_up = checks[0].status == OK
    checks.append(
        check_schema() if database_up else Check("migrations", UNKNOWN, "database down", "fix the database first")
    )
    checks.append(check_redis())
    broker_up = checks[-1].status == OK
    if broker_up:
        checks.append(check_workers(timeout))
    else:
        checks.append(Check("workers", UNKNOWN, "broker down", "fix the broker first"))
    now = timezone.now()
    checks.append(check_beat(now) if broker_up else Check("beat", UNKNOWN, "broker down", "fix the broker first"))
    schema_up = database_up and checks[1].status == OK
    db_checks: list[Callable[[], Check]] = [check_clock, lambda: check_overdue(now), lambda: check_stuck_runs(now)]
    for name, run in zip(("clock", "overdue timers", "stuck runs"), db_checks, strict=True):
        checks.append(run() if schema_up else Check(name, UNKNOWN, "database or schema not ready", "fix those first"))
    if broker_up:
        checks.append(check_queues(max_queue_depth, timeout))
    else:
        checks.append(Check("queues", UNKNOWN, "broker down", "fix the broker first"))
    return checks


def doctor(verb: Verb, opts: dict[str, Any]) -> None:
    checks = run_checks(timeout=opts["timeout"], max_queue_depth=opts["max_queue_depth"])
    problems = [c for c in checks if c.status == PROBLEM]
    if opts["json"]:
        write_json(
            verb,
            {"ok": not problems, "at": utc(datetime.now(UTC)), "checks": [asdict(c) for c in checks]},
        )
    else:
        rows = [
            (c.status.upper() if c.status != OK else "ok", c.name, c.detail + (f" -> {c.advice}" if c.advice else ""))
            for c in checks
        ]
        verb.stdout.write(table(rows, ["", "CHECK", "DETAIL"]))
    if problems:
        raise CommandError(f"{len(problems)} problem(s): {', '.join(c.name for c in problems)}")
    if not opts["json"]:
        verb.stderr.write("No problem found.")


def register(nouns: Any, leaf: Any) -> None:
    p = leaf(nouns, "doctor", doctor, "check database, broker, workers, beat, clocks, backlog; exit 1 on a problem")
    p.add_argument("--timeout", type=float, default=1.5, help="seconds to wait for the broker and the workers")
    p.add_argument(
        "--max-queue-depth", type=int, default=10_000, help="more messages than this waiting in a queue is a problem"
    )
