"""``reconcile_timers``: the older name of ``minoots reconcile --json`` (one pass, its report as JSON)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand

from timers import engine


class Command(BaseCommand):
    help = "Run one reconciler pass now and print what it did as JSON (one line). Same as: manage.py minoots reconcile --json."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(json.dumps(engine.reconcile().as_dict()))
