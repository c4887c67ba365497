"""``manage.py minoots <noun> <verb>``: every routine operator task (see timers/management/cli).

  keys create|list|revoke          timers create|list|show|cancel|reschedule|fire-now
  runs retry                       reconcile        doctor        prune        export        import

Each verb prints a table (or a line) for people and ``--json`` for scripts, and exits 1 with
a one-line error on failure. ``create_api_key``, ``webhook_secret`` and ``reconcile_timers``
remain as the older names of ``keys create``, the tenant secret and ``reconcile``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from timers import engine
from timers.management.cli import doctor, keys, prune, runs, timers, transfer
from timers.management.cli.output import Verb, write_json

Handler = Callable[[Verb, dict[str, Any]], None]


def reconcile(verb: Verb, opts: dict[str, Any]) -> None:
    report = engine.reconcile().as_dict()
    if opts["json"]:
        write_json(verb, report)
        return
    verb.stdout.write(
        f"Reconciler pass: armed {report['armed']}, ticks re-published {report['ticksRepublished']}, "
        f"overdue repaired {report['repaired']}, action runs recovered {report['runsRecovered']} "
        f"({report['durationMs']} ms)."
    )


def leaf(verbs: Any, name: str, handler: Handler, help_text: str) -> CommandParser:
    """A verb's parser: its help, ``--json``, and the function that runs it."""
    parser: CommandParser = verbs.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("--json", action="store_true", help="print JSON (for scripts) instead of a table")
    parser.set_defaults(handler=handler)
    return parser


class Command(BaseCommand):
    help = "MINOOTS operator commands: manage.py minoots <noun> <verb> [--json]; -h on any of them for more."

    def add_arguments(self, parser: CommandParser) -> None:
        nouns = parser.add_subparsers(
            dest="noun",
            required=True,
            metavar="{keys,timers,runs,reconcile,doctor,prune,export,import}",
        )
        keys.register(nouns, leaf)
        timers.register(nouns, leaf)
        runs.register(nouns, leaf)
        leaf(nouns, "reconcile", reconcile, "run one reconciler pass now (arm, repair lost ticks, recover runs)")
        doctor.register(nouns, leaf)
        prune.register(nouns, leaf)
        transfer.register(nouns, leaf)

    def handle(self, *args: Any, **options: Any) -> None:
        handler: Handler = options["handler"]
        handler(self, options)
