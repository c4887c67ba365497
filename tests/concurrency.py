"""Run test code in several threads at once, each with its own database connection."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connection


def run_in_threads(*targets: Callable[[], Any], timeout: float = 60, start_together: bool = False) -> list[Any]:
    """Run each target in its own thread; return their results in order.

    Each thread closes its database connection when done (Django opens one per thread). The
    first exception raised in a thread is re-raised here, so a failure cannot pass silently.
    ``start_together`` holds every thread at a barrier until all have started.
    """
    barrier = threading.Barrier(len(targets)) if start_together else None
    results: list[Any] = [None] * len(targets)
    errors: list[BaseException] = []

    def run(i: int, target: Callable[[], Any]) -> None:
        try:
            if barrier is not None:
                barrier.wait()
            results[i] = target()
        except BaseException as exc:  # re-raised in the calling thread below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if any(thread.is_alive() for thread in threads):
        raise AssertionError(f"threads still running after {timeout}s")
    if errors:
        raise errors[0]
    return results
