"""Run one reconciler pass (arm, refresh lost ticks, repair overdue timers, recover action runs)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand

from timers import engine


class Command(BaseCommand):
    help = "Run one reconciler pass now and print what it did as JSON."

    def handle(self, *args: Any, **options: Any) -> None:
        report = engine.reconcile()
        self.stdout.write(json.dumps(report.as_dict()))
