"""Prometheus metrics, all named ``minoots_*`` (served by ``minoots_project.health.metrics``).

Web, worker and beat each count in their own process. With PROMETHEUS_MULTIPROC_DIR set
(``runall`` and compose set it) every process writes its samples to a file there and
/metrics merges them, so timers fired by a worker show up in the web's scrape
(prometheus-client multiprocess mode). Armed / scheduled counts are not counted at all: a
collector reads them from the database at scrape time.

Call sites: ``timer_transition`` and ``FIRE_LATENESS`` (the transitions in timers.services),
``RECONCILE_RUNS`` and ``RECONCILE_ACTIONS`` (timers.engine), ``action_attempt`` (actions.transitions).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator

from django.db.models import Count
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

from timers.models import Timer, TimerStatus

log = logging.getLogger(__name__)


def _process_identifier() -> str:
    # The default (the pid) collides when containers of a scaled service share one metrics
    # volume: every container's main process may be pid 1 or 7.
    return f"{socket.gethostname()}-{os.getpid()}".replace("_", "-")


if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # Chosen before any metric below is built; metrics read values.ValueClass when created.
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_identifier)

TIMER_EVENTS = ("created", "rescheduled", "fired", "cancelled", "settled", "failed")

_TIMER_COUNTERS = {
    event: Counter(f"minoots_timers_{event}", f"Timers {event}, by tenant", ["tenant"]) for event in TIMER_EVENTS
}
FIRE_LATENESS = Histogram(
    "minoots_fire_lateness_seconds",
    "Fired time minus fireAt",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
RECONCILE_RUNS = Counter("minoots_reconcile_runs", "Reconciler passes")
RECONCILE_ACTIONS = Counter(
    "minoots_reconcile_repairs",
    "Reconciler work by kind (armed, tick_republished, repaired, run_recovered)",
    ["kind"],
)
# The outcome words of an attempt in the API (actions.models.AttemptOutcome; this domain module
# does not import actions).
ATTEMPT_OUTCOMES = ("succeeded", "transient_failure", "permanent_failure")
ACTION_ATTEMPTS = Counter(
    "minoots_action_attempts",
    "Action attempts by kind and outcome (succeeded, transient_failure, permanent_failure)",
    ["kind", "outcome"],
)
ACTION_DURATION = Histogram(
    "minoots_action_duration_seconds",
    "Duration of one action attempt, by kind",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


# --- helpers for the code that counts -------------------------------------------------------


def timer_transition(tenant: str, event: str, count: int = 1) -> None:
    """Count ``count`` timers of ``tenant`` entering ``event`` (created, fired, cancelled, settled, failed)."""
    counter = _TIMER_COUNTERS.get(event)
    if counter is None:
        log.warning("unknown timer metric event %r", event)
        return
    counter.labels(tenant=tenant).inc(count)


def action_attempt(kind: str, outcome: str, seconds: float) -> None:
    """Count one finished action attempt and its duration.

    ``kind`` is the action kind (webhook, command, file, ...); ``outcome`` the attempt's outcome
    as the API words it: ``succeeded``, ``transient_failure`` (retried while attempts are left)
    or ``permanent_failure``. Anything else is logged and not counted (a label is never free text).
    """
    if outcome not in ATTEMPT_OUTCOMES:
        log.warning("unknown action attempt outcome %r", outcome)
        return
    ACTION_ATTEMPTS.labels(kind=kind, outcome=outcome).inc()
    ACTION_DURATION.labels(kind=kind).observe(max(0.0, seconds))


# --- scrape ---------------------------------------------------------------------------------


class PendingTimersCollector(Collector):
    """``minoots_timers_armed`` / ``minoots_timers_scheduled``: one COUNT at scrape time.

    The filter matches the partial index on pending timers, so the cost follows the number of
    pending timers, not the table. A database error drops the gauges from this scrape only.
    """

    def collect(self) -> Iterator[Metric]:
        statuses = (TimerStatus.ARMED, TimerStatus.SCHEDULED)
        try:
            rows = {
                row["status"]: row["n"]
                for row in Timer.objects.filter(status__in=statuses).values("status").annotate(n=Count("id")).order_by()
            }
        except Exception:
            log.warning("metrics: could not count pending timers", exc_info=True)
            return
        for status in statuses:
            name = status.value
            yield GaugeMetricFamily(f"minoots_timers_{name}", f"Timers currently {name}", value=rows.get(name, 0))


def render_latest() -> bytes:
    """Every process's samples (merged in multiprocess mode) plus the pending-timer gauges."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)
        output = generate_latest(registry)
    else:
        output = generate_latest(REGISTRY)
    pending = CollectorRegistry()
    pending.register(PendingTimersCollector())
    return output + generate_latest(pending)
