"""A task for the shutdown test only: loaded into a worker with ``--include tests.ops.slowtask``."""

from __future__ import annotations

import time
from pathlib import Path

from celery import shared_task


@shared_task(name="ops_test.sleep_then_write", ignore_result=True)
def sleep_then_write(path: str, seconds: float) -> None:
    Path(f"{path}.started").write_text("")
    time.sleep(seconds)
    Path(path).write_text("done")
