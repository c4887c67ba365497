"""Prometheus metrics (names prefixed ``minoots_``). Worker processes share them through
prometheus-client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TIMER_TRANSITIONS = Counter(
    "minoots_timers", "Timer lifecycle transitions by tenant and event", ["tenant", "event"]
)
FIRE_LATENESS = Histogram(
    "minoots_fire_lateness_seconds",
    "Fired time minus fireAt",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
RECONCILE_ACTIONS = Counter(
    "minoots_reconcile_actions", "Reconciler work by kind (armed, repaired, recovered)", ["kind"]
)
RECONCILE_RUNS = Counter("minoots_reconcile_runs", "Reconciler passes")


def timer_transition(tenant: str, event: str, count: int = 1) -> None:
    TIMER_TRANSITIONS.labels(tenant=tenant, event=event).inc(count)
