"""``minoots prune``: terminal timers that ended long ago go, with their events and runs, in batches."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from actions.models import ActionAttempt, ActionRun
from tests.commands.conftest import refused, run, run_json
from tests.factories import make_run, make_timer
from timers.models import Tenant, Timer, TimerEvent


def _old_timers(tenant: Tenant, count: int, *, days: int = 40) -> list[Timer]:
    ended = timezone.now() - timedelta(days=days)
    timers = []
    for i in range(count):
        status = ("settled", "failed", "cancelled")[i % 3]
        ends: dict[str, Any] = {"cancelled_at": ended} if status == "cancelled" else {"settled_at": ended}
        timer = make_timer(tenant=tenant, status=status, name=f"old{i}", fire_at=ended, created_at=ended, **ends)
        TimerEvent.objects.create(timer=timer, kind="created", occurred_at=ended, state_version=1)
        timers.append(timer)
    return timers


def test_prune_deletes_old_terminal_timers_with_events_runs_and_attempts_in_batches(tenant: Tenant) -> None:
    old = _old_timers(tenant, 7)
    run_row = make_run(timer=old[1], status="failed", attempts=1)
    ActionAttempt.objects.create(run=run_row, number=1, started_at=timezone.now(), outcome="permanent_failure")
    recent = make_timer(tenant=tenant, status="settled", settled_at=timezone.now() - timedelta(days=1))
    pending = make_timer(tenant=tenant, status="scheduled", fire_at=timezone.now() - timedelta(days=60))
    fired = make_timer(tenant=tenant, status="fired", fire_at=timezone.now() - timedelta(days=60))

    data = run_json("prune", "--older-than", "30d", "--batch", "3")

    assert data["deleted"] == {"timers": 7, "events": 7, "runs": 1, "attempts": 1}
    assert data["batches"] == 3  # 3 + 3 + 1
    assert set(Timer.objects.values_list("pk", flat=True)) == {recent.pk, pending.pk, fired.pk}
    assert not ActionRun.objects.exists() and not ActionAttempt.objects.exists()
    assert TimerEvent.objects.count() == 0


def test_prune_prints_what_it_deleted(tenant: Tenant) -> None:
    _old_timers(tenant, 2)
    out, _ = run("prune", "--older-than", "30d", "--no-progress")
    assert out.startswith("Deleted 2 terminal timer(s) that ended before ")
    assert "in 1 batch(es) of at most 1000" in out


def test_dry_run_counts_and_deletes_nothing(tenant: Tenant) -> None:
    old = _old_timers(tenant, 4)
    make_run(timer=old[0], status="succeeded")
    data = run_json("prune", "--older-than", "30d", "--dry-run")
    assert data["dryRun"] is True
    assert data["wouldDelete"] == {"timers": 4, "events": 4, "runs": 1}
    assert Timer.objects.count() == 4
    out, _ = run("prune", "--older-than", "30d", "--dry-run")
    assert "Would delete 4 terminal timer(s)" in out and "Nothing deleted" in out


def test_prune_keeps_timers_younger_than_the_age_and_other_tenants(tenant: Tenant, other_tenant: Tenant) -> None:
    _old_timers(tenant, 2, days=10)
    _old_timers(other_tenant, 2, days=40)
    assert run_json("prune", "--older-than", "30d", "--tenant", "acme")["deleted"]["timers"] == 0
    assert run_json("prune", "--older-than", "1w", "--tenant", "acme")["deleted"]["timers"] == 2
    assert Timer.objects.filter(tenant=other_tenant).count() == 2


def test_prune_refuses_bad_options(db: Any) -> None:
    refused("prune", "--older-than", "soon", match="--older-than: 'soon' is not a duration")
    refused("prune", "--older-than", "0s", match="--older-than: must be positive")
    refused("prune", "--older-than", "30d", "--batch", "0", match="--batch must be at least 1")
    refused("prune", "--older-than", "30d", "--tenant", "nobody", match="no tenant 'nobody'")
    refused("prune", match="the following arguments are required: --older-than")
