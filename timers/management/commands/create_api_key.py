"""``create_api_key TENANT``: the older name of ``minoots keys create`` (the README and compose use it)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from timers.management.cli import keys
from timers.models import Role


class Command(BaseCommand):
    help = (
        "Create an API key for TENANT (created if missing). The raw key is printed once, on the last line. "
        "Same as: manage.py minoots keys create."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("tenant", help="tenant id (a slug, e.g. acme)")
        parser.add_argument("--name", default="", help="a label for the key")
        parser.add_argument(
            "--role",
            action="append",
            dest="roles",
            choices=[r.value for r in Role],
            help="repeatable; default: timer.read, timer.write, timer.cancel",
        )
        parser.add_argument("--json", action="store_true", help="print the key and its fields as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        keys.create(self, options)
