"""``minoots runs retry``: a failed action run again (a new attempt chain), one or all failed since."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from django.core.management.base import CommandError
from rest_framework.exceptions import ValidationError

from actions import selectors as action_selectors
from actions import services as action_services
from timers.api.serializers import parse_rfc3339
from timers.management.cli.keys import tenant_existing
from timers.management.cli.output import Verb, table, utc, write_json
from timers.services import ServiceError

DEFAULT_BY = "cli"


def _since(raw: str) -> datetime:
    try:
        return parse_rfc3339(raw)
    except ValidationError as exc:
        raise CommandError(f"--failed-since: {exc.detail[0] if isinstance(exc.detail, list) else exc.detail}") from exc


def retry(verb: Verb, opts: dict[str, Any]) -> None:
    if (opts["run_id"] is None) == (opts["failed_since"] is None):
        raise CommandError("give one run id, or --failed-since TIME")
    if opts["run_id"] is not None:
        if opts["tenant"]:
            raise CommandError("--tenant goes with --failed-since")
        try:
            run_ids = [UUID(opts["run_id"])]
        except ValueError as exc:
            raise CommandError(f"not a run id (a UUID): {opts['run_id'][:80]!r}") from exc
    else:
        tenant = tenant_existing(opts["tenant"]) if opts["tenant"] else None
        run_ids = list(
            action_selectors.runs_failed_since(since=_since(opts["failed_since"]), tenant=tenant).values_list(
                "id", flat=True
            )
        )
    retried: list[UUID] = []
    failures: list[str] = []
    for run_id in run_ids:
        try:
            action_services.run_retry(run_id=run_id, by=opts["by"])
        except ServiceError as exc:
            failures.append(f"run {run_id}: {exc.message}")
            continue
        retried.append(run_id)
    if opts["json"]:
        write_json(verb, {"retried": [str(r) for r in retried], "errors": failures})
    elif retried:
        runs = action_selectors.runs_by_id(run_ids=retried)
        verb.stdout.write(
            table(
                [(r.id, r.timer_id, r.action_id, r.kind, r.status, utc(r.next_attempt_at)) for r in runs],
                ["RUN ID", "TIMER", "ACTION", "KIND", "STATUS", "NEXT ATTEMPT"],
            )
        )
        verb.stderr.write(f"Retried {len(retried)} run(s); each starts a new attempt chain.")
    elif not failures:
        verb.stderr.write("No failed runs since then.")
    if failures:
        raise CommandError(
            "; ".join(failures) if len(failures) <= 3 else f"{len(failures)} runs not retried: {failures[0]}"
        )


def register(nouns: Any, leaf: Any) -> None:
    noun = nouns.add_parser("runs", help="action runs: retry")
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="{retry}")
    p = leaf(verbs, "retry", retry, "retry a failed action run (its timer goes back to fired and settles again)")
    p.add_argument("run_id", nargs="?", help="one failed run's id (see: minoots timers show TIMER)")
    p.add_argument("--failed-since", metavar="RFC3339", help="every run that failed since then")
    p.add_argument("--tenant", help="with --failed-since: only this tenant's runs")
    p.add_argument("--by", default=DEFAULT_BY)
