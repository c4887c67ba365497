"""``minoots prune --older-than 30d``: delete terminal timers that ended long ago, in batches."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import CommandError
from django.utils import timezone

from actions import selectors as action_selectors
from timers import retention
from timers.durations import DurationError, parse_duration
from timers.management.cli.keys import tenant_existing
from timers.management.cli.output import Verb, progress_bar, utc, write_json


def _older_than(raw: str) -> timedelta:
    try:
        value = parse_duration(raw)
    except DurationError as exc:
        raise CommandError(f"--older-than: {exc}") from exc
    if value <= timedelta(0):
        raise CommandError("--older-than: must be positive")
    return value


def prune(verb: Verb, opts: dict[str, Any]) -> None:
    age = _older_than(opts["older_than"])
    if opts["batch"] < 1:
        raise CommandError("--batch must be at least 1")
    tenant_id = tenant_existing(opts["tenant"]).id if opts["tenant"] else None
    cutoff = timezone.now() - age
    counts = retention.prunable_counts(ended_before=cutoff, tenant_id=tenant_id)
    counts["runs"] = action_selectors.runs_of_timers_count(
        timers=retention.timers_prunable(ended_before=cutoff, tenant_id=tenant_id)
    )
    if opts["dry_run"]:
        if opts["json"]:
            write_json(verb, {"dryRun": True, "endedBefore": utc(cutoff), "wouldDelete": counts})
        else:
            verb.stdout.write(
                f"Would delete {counts['timers']} terminal timer(s) that ended before {utc(cutoff)}, "
                f"with {counts['events']} event(s) and {counts['runs']} action run(s). Nothing deleted (--dry-run)."
            )
        return
    batches = 0
    with progress_bar(total=counts["timers"], desc="pruning", unit="timer", show=opts["progress"]) as bar:

        def advance(n: int) -> None:
            nonlocal batches
            batches += 1
            bar.update(n)

        deleted = retention.timers_prune(
            ended_before=cutoff, batch=opts["batch"], tenant_id=tenant_id, on_batch=advance
        )
    done = {
        "timers": deleted["timers.Timer"],
        "events": deleted["timers.TimerEvent"],
        "runs": deleted["actions.ActionRun"],
        "attempts": deleted["actions.ActionAttempt"],
    }
    if opts["json"]:
        write_json(verb, {"dryRun": False, "endedBefore": utc(cutoff), "deleted": done, "batches": batches})
        return
    verb.stdout.write(
        f"Deleted {done['timers']} terminal timer(s) that ended before {utc(cutoff)}, with {done['events']} "
        f"event(s), {done['runs']} action run(s) and {done['attempts']} attempt(s), in {batches} batch(es) "
        f"of at most {opts['batch']}."
    )


def register(nouns: Any, leaf: Any) -> None:
    p = leaf(nouns, "prune", prune, "delete settled/failed/cancelled timers that ended long ago, with events and runs")
    p.add_argument("--older-than", required=True, metavar="DURATION", help="ended at least this long ago, e.g. 30d")
    p.add_argument("--batch", type=int, default=1000, help="timers per transaction (default 1000)")
    p.add_argument("--tenant", help="only this tenant's timers")
    p.add_argument("--dry-run", action="store_true", help="count only, delete nothing")
    add_progress_option(p)


def add_progress_option(p: Any) -> None:
    p.add_argument(
        "--progress",
        action="store_true",
        default=None,
        help="draw the progress bar on stderr even when it is not a terminal",
    )
    p.add_argument("--no-progress", action="store_false", dest="progress", help="never draw the progress bar")
