"""``minoots reconcile`` (and ``reconcile_timers``) and ``minoots runs retry``."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from typing import Any

from django.core.management import call_command
from django.utils import timezone

from tests.commands.conftest import refused, run, run_json
from tests.factories import make_run, make_timer, schedule_timer
from timers.models import Tenant, Timer, TimerEvent


def test_reconcile_runs_a_pass_and_says_what_it_did(tenant: Tenant, broker: Any) -> None:
    schedule_timer(tenant=tenant, in_=timedelta(minutes=5))
    Timer.objects.update(fire_at=timezone.now() + timedelta(seconds=30))
    out, _ = run("reconcile")
    assert out.startswith("Reconciler pass: armed 1,")
    assert run_json("reconcile")["armed"] == 0


def test_reconcile_timers_stays_one_line_of_json(db: Any, broker: Any) -> None:
    out = StringIO()
    call_command("reconcile_timers", stdout=out)
    assert set(json.loads(out.getvalue())) >= {"armed", "ticksRepublished", "repaired", "runsRecovered"}


def _failed_run(tenant: Tenant, *, days_ago: float = 0) -> Any:
    at = timezone.now() - timedelta(days=days_ago)
    timer = make_timer(
        tenant=tenant,
        status="failed",
        settled_at=at,
        failure_reason="actions failed: a",
        actions=[{"id": "a", "kind": "webhook", "parameters": {"url": "https://a.example"}}],
    )
    return make_run(
        timer=timer,
        status="failed",
        attempts=3,
        finished_at=at,
        last_error="HTTP 500",
        parameters={"url": "https://a.example"},
    )


def test_retry_one_failed_run_reopens_its_timer(tenant: Tenant, broker: Any) -> None:
    run_row = _failed_run(tenant)
    out, err = run("runs", "retry", str(run_row.id), "--by", "alice")
    assert str(run_row.id) in out and "Retried 1 run(s)" in err
    timer = Timer.objects.get()
    assert timer.status == "fired"
    event = TimerEvent.objects.get(timer=timer, kind="retried")
    assert event.data["by"] == "alice"


def test_retry_every_run_failed_since_a_time(tenant: Tenant, other_tenant: Tenant, broker: Any) -> None:
    recent = _failed_run(tenant, days_ago=1)
    _failed_run(tenant, days_ago=10)
    _failed_run(other_tenant, days_ago=1)
    since = (timezone.now() - timedelta(days=2)).isoformat()
    data = run_json("runs", "retry", "--failed-since", since, "--tenant", "acme")
    assert data == {"retried": [str(recent.id)], "errors": []}
    assert run("runs", "retry", "--failed-since", timezone.now().isoformat())[1] == "No failed runs since then.\n"


def test_retry_refuses_what_it_cannot_do(tenant: Tenant) -> None:
    refused("runs", "retry", match="give one run id, or --failed-since TIME")
    refused("runs", "retry", "nope", match="not a run id")
    refused("runs", "retry", "--failed-since", "last week", match="--failed-since: 'last week' is not an RFC 3339")
    refused("runs", "retry", "--failed-since", "2026-01-01T00:00:00Z", "--tenant", "nobody", match="no tenant 'nobody'")
    ok = make_run(timer=make_timer(tenant=tenant, status="settled"), status="succeeded")
    refused("runs", "retry", str(ok.id), match=f"run {ok.id}: ")
