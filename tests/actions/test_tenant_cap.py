"""The per-tenant cap on running action attempts (MINOOTS_TENANT_ACTION_CONCURRENCY; issue 9
item 2): one tenant cannot hold every action slot, and the runs it holds back are not lost."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import redis
from django.utils import timezone

from actions import execution, transitions
from actions.batch import runs_execute_batch
from actions.models import ActionAttempt, ActionRun, RunStatus
from actions.transitions import Finished
from tests.actions.support import Receiver, drive, queued_runs, webhook
from tests.concurrency import run_in_threads
from tests.factories import make_tenant, make_timer
from timers import services
from timers.models import Tenant, Timer, TimerEvent, TimerStatus


def fired(tenant: Tenant, url: str, count: int) -> list[Timer]:
    """``count`` due timers of ``tenant`` with one webhook each, fired (their runs pending, due)."""
    timers = [
        make_timer(
            tenant=tenant,
            name=f"{tenant.pk}{i}",
            actions=[webhook("hook", f"{url}/{tenant.pk}/{i}")],
            retry_policy={"maxAttempts": 3, "backoffInitialMs": 10, "backoffMultiplier": 2},
        )
        for i in range(count)
    ]
    services.timers_fire(limit=100)
    return timers


def run_ids(timers: list[Timer]) -> list[Any]:
    by_timer = dict(ActionRun.objects.filter(timer__in=timers).values_list("timer_id", "pk"))
    return [by_timer[t.pk] for t in timers]


def running_of(tenant: Tenant) -> int:
    return ActionRun.objects.filter(timer__tenant=tenant, status=RunStatus.RUNNING).count()


@pytest.mark.django_db
def test_a_tenant_at_its_cap_waits_while_another_tenant_in_the_same_claim_proceeds_and_nothing_is_lost(
    tenant: Tenant, other_tenant: Tenant, receiver: Receiver, allow_private: None, settings: Any
) -> None:
    settings.MINOOTS_TENANT_ACTION_CONCURRENCY = 2
    a_timers = fired(tenant, receiver.url, 5)
    b_timers = fired(other_tenant, receiver.url, 1)
    a_ids, b_ids = run_ids(a_timers), run_ids(b_timers)
    before = timezone.now()

    claims = transitions.runs_claim(run_ids=a_ids[:3] + b_ids + a_ids[3:])

    assert [c.run.pk for c in claims] == a_ids[:2] + b_ids  # claim order kept, B not held up by A
    assert running_of(tenant) == 2 and running_of(other_tenant) == 1
    held = ActionRun.objects.filter(pk__in=a_ids[2:])
    for run in held:
        # Held back: still pending, due again within a second, no attempt, no event.
        assert (run.status, run.attempts) == (RunStatus.PENDING, 0)
        assert run.next_attempt_at is not None
        assert before < run.next_attempt_at <= timezone.now() + timedelta(seconds=1)
    assert not ActionAttempt.objects.filter(run__in=held).exists()
    # A held run is not claimed again before it is due (a duplicate message stays a no-op).
    assert transitions.runs_claim(run_ids=a_ids[2:]) == []

    for claim in claims:
        outcome = execution.attempt_run(claim)
        execution.runs_conclude([Finished(claim=claim, outcome=outcome, seconds=0.01)])
    assert running_of(tenant) == 0
    for timer in a_timers[2:]:
        drive(timer)  # the held runs, once due, now that A's first two finished

    for timer in a_timers + b_timers:
        timer.refresh_from_db()
        assert timer.status == TimerStatus.SETTLED
        run = ActionRun.objects.get(timer=timer)
        assert (run.status, run.attempts) == (RunStatus.SUCCEEDED, 1)
        assert [a.number for a in ActionAttempt.objects.filter(run=run)] == [1]
        kinds = list(TimerEvent.objects.filter(timer=timer).order_by("id").values_list("kind", flat=True))
        assert kinds == ["fired", "action.succeeded", "settled"]
    assert len(receiver.requests) == 6


@pytest.mark.django_db
def test_a_batch_runs_at_most_the_cap_of_one_tenant_and_republishes_the_rest_within_a_second(
    tenant: Tenant,
    other_tenant: Tenant,
    receiver: Receiver,
    allow_private: None,
    settings: Any,
    broker: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.MINOOTS_TENANT_ACTION_CONCURRENCY = 2
    a_ids = run_ids(fired(tenant, receiver.url, 5))
    b_ids = run_ids(fired(other_tenant, receiver.url, 1))
    broker.delete("actions")
    seen: list[int] = []
    real_attempt = execution.attempt_run

    def counting_attempt(claim: Any, **kwargs: Any) -> Any:
        seen.append(running_of(tenant))
        return real_attempt(claim, **kwargs)

    monkeypatch.setattr(execution, "attempt_run", counting_attempt)

    ran = runs_execute_batch(run_ids=a_ids + b_ids)

    assert ran == 3 and max(seen) <= 2
    assert sorted(r.path for r in receiver.requests) == sorted(
        [f"/{tenant.pk}/0", f"/{tenant.pk}/1", f"/{other_tenant.pk}/0"]
    )
    queued = queued_runs(broker)
    assert sorted(run_id for run_id, _ in queued) == sorted(str(pk) for pk in a_ids[2:])
    now = timezone.now()
    for _, eta in queued:
        assert eta is not None and now < eta <= now + timedelta(seconds=1)


def claim_and_hold(ids: list[Any]) -> int:
    """Claim ``ids`` (attempts left open, as while they run); return how many were claimed."""
    return len(transitions.runs_claim(run_ids=ids))


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_for_one_tenant_never_exceed_its_cap(
    receiver: Receiver, allow_private: None, settings: Any
) -> None:
    settings.MINOOTS_TENANT_ACTION_CONCURRENCY = 2
    tenant = make_tenant(id="acme")
    for round_ in range(5):
        ids = run_ids(fired(tenant, f"{receiver.url}/r{round_}", 8))

        claimed = run_in_threads(*[lambda i=i: claim_and_hold(ids[i : i + 1]) for i in range(8)], start_together=True)

        assert sum(claimed) == 2 and running_of(tenant) == 2
        ActionRun.objects.filter(timer__tenant=tenant).update(status=RunStatus.SUCCEEDED, lease_expires_at=None)


@pytest.mark.django_db
def test_the_cap_is_off_by_default_and_0_means_no_cap(
    tenant: Tenant, receiver: Receiver, allow_private: None, settings: Any
) -> None:
    # Off by default: the cap counts a batch's claimed runs, so a cap below the batch size
    # throttles a one-tenant burst to a crawl (webhook bench: 36 attempts/s with a cap of 8).
    assert settings.MINOOTS_TENANT_ACTION_CONCURRENCY == 0
    settings.MINOOTS_TENANT_ACTION_CONCURRENCY = 8
    ids = run_ids(fired(tenant, receiver.url, 10))
    assert len(transitions.runs_claim(run_ids=ids[:9])) == 8

    settings.MINOOTS_TENANT_ACTION_CONCURRENCY = 0
    ActionRun.objects.filter(pk__in=ids).update(next_attempt_at=timezone.now() - timedelta(seconds=1))

    assert len(transitions.runs_claim(run_ids=ids)) == 2  # the 8 running stay running; no cap for the rest
    assert running_of(tenant) == 10
