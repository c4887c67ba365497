"""The scheduling steps called directly against real Postgres and Redis (no worker)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from actions.models import ActionRun, RunStatus
from tests.concurrency import run_in_threads
from timers import engine, services, ticks
from timers.models import Tenant, Timer, TimerEvent, TimerStatus
from timers.services import Conflict, TimerSpec

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker() -> redis.Redis:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    return client


def queued_ticks(broker: redis.Redis) -> list[dict[str, Any]]:
    """The fire_due messages waiting in the `timers` queue (kombu keeps them in a Redis list)."""
    out = []
    for raw in broker.lrange("timers", 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] == "timers.fire_due":
            out.append(message["headers"])
    return out


def make_timer(tenant: Tenant, *, in_: timedelta, actions: list[dict[str, Any]] | None = None) -> Timer:
    now = timezone.now()
    spec = TimerSpec(
        name="t",
        fire_at=now + in_,
        duration_ms=int(in_.total_seconds() * 1000),
        action_bundle={"actions": actions} if actions else None,
    )
    timer, _ = services.timer_create(tenant=tenant, spec=spec)
    return timer


def make_due(timer: Timer, ago: timedelta = timedelta(milliseconds=5)) -> None:
    Timer.objects.filter(pk=timer.pk).update(fire_at=timezone.now() - ago)


def event_kinds(timer: Timer) -> list[str]:
    return list(TimerEvent.objects.filter(timer=timer).order_by("id").values_list("kind", flat=True))


def test_timer_due_within_the_horizon_is_armed_at_creation_with_one_tick(tenant: Tenant, broker: redis.Redis) -> None:
    timer = make_timer(tenant, in_=timedelta(seconds=30))

    timer.refresh_from_db()
    assert timer.status == TimerStatus.ARMED
    assert event_kinds(timer) == ["created", "armed"]
    headers = queued_ticks(broker)
    assert len(headers) == 1
    assert headers[0]["eta"] is not None


def test_timers_in_the_same_tick_bucket_share_one_message(tenant: Tenant, broker: redis.Redis) -> None:
    fire_at = timezone.now() + timedelta(seconds=20)
    fire_at = fire_at.replace(microsecond=(fire_at.microsecond // 10_000) * 10_000)  # bucket start
    for _ in range(50):
        services.timer_create(tenant=tenant, spec=TimerSpec(name="same", fire_at=fire_at, duration_ms=20_000))

    assert Timer.objects.filter(status=TimerStatus.ARMED).count() == 50
    assert len(queued_ticks(broker)) == 1


def test_timer_beyond_the_horizon_stays_scheduled_until_the_reconciler_arms_it(
    tenant: Tenant, broker: redis.Redis
) -> None:
    timer = make_timer(tenant, in_=timedelta(minutes=10))
    timer.refresh_from_db()
    assert timer.status == TimerStatus.SCHEDULED
    assert queued_ticks(broker) == []

    report = engine.reconcile(now=timezone.now() + timedelta(minutes=9, seconds=30))

    timer.refresh_from_db()
    assert report.armed == 1
    assert timer.status == TimerStatus.ARMED
    assert len(queued_ticks(broker)) == 1


def test_due_timer_without_actions_is_fired_then_settled_with_its_lateness(tenant: Tenant, broker: redis.Redis) -> None:
    timer = make_timer(tenant, in_=timedelta(seconds=5))
    make_due(timer, ago=timedelta(milliseconds=250))

    claimed = engine.timers_claim_due(limit=10)

    timer.refresh_from_db()
    assert [c.id for c in claimed] == [timer.id]
    assert timer.status == TimerStatus.SETTLED
    assert timer.fired_at is not None and timer.settled_at is not None
    assert timer.lateness_ms is not None and 250 <= timer.lateness_ms < 60_000
    assert event_kinds(timer) == ["created", "armed", "fired", "settled"]
    assert timer.state_version == 4


def test_fired_timer_with_actions_gets_pending_runs_and_stays_fired(tenant: Tenant, broker: redis.Redis) -> None:
    Timer.objects.all().delete()
    now = timezone.now()
    timer = Timer.objects.create(
        tenant=tenant, name="with-actions", status=TimerStatus.ARMED, duration_ms=1, created_at=now,
        fire_at=now - timedelta(milliseconds=1), state_version=2,
        action_bundle={"actions": [{"id": "a", "kind": "webhook", "parameters": {}},
                                   {"id": "b", "kind": "webhook", "parameters": {}}], "concurrency": 1},
    )

    engine.timers_claim_due(limit=10)

    timer.refresh_from_db()
    assert timer.status == TimerStatus.FIRED
    runs = list(ActionRun.objects.filter(timer=timer).order_by("position"))
    assert [r.action_id for r in runs] == ["a", "b"]
    assert all(r.status == RunStatus.PENDING for r in runs)
    # Only the first run may start (concurrency 1); the second waits without a due time.
    assert runs[0].next_attempt_at is not None and runs[1].next_attempt_at is None


def test_timer_not_yet_due_is_not_claimed(tenant: Tenant, broker: redis.Redis) -> None:
    timer = make_timer(tenant, in_=timedelta(seconds=30))

    assert engine.timers_claim_due(limit=10) == []
    timer.refresh_from_db()
    assert timer.status == TimerStatus.ARMED


def test_duplicate_ticks_fire_a_timer_once(tenant: Tenant, broker: redis.Redis) -> None:
    timer = make_timer(tenant, in_=timedelta(seconds=5))
    make_due(timer)
    bucket = ticks.bucket_of(timer.fire_at)

    fired_first = engine.fire_due(bucket=bucket)
    fired_again = engine.fire_due(bucket=bucket)
    fired_third = engine.fire_due(bucket=None)

    assert (fired_first, fired_again, fired_third) == (1, 0, 0)
    assert event_kinds(timer).count("fired") == 1


def test_early_tick_fires_nothing_and_republishes_itself_for_the_bucket(tenant: Tenant, broker: redis.Redis) -> None:
    timer = make_timer(tenant, in_=timedelta(seconds=3))
    broker.delete("timers")

    fired = engine.fire_due(bucket=ticks.bucket_of(timer.fire_at))

    timer.refresh_from_db()
    assert fired == 0
    assert timer.status == TimerStatus.ARMED
    republished = queued_ticks(broker)
    assert len(republished) == 1
    assert republished[0]["eta"] is not None


def test_cancelled_timer_never_fires(tenant: Tenant, broker: redis.Redis) -> None:
    timer = make_timer(tenant, in_=timedelta(seconds=5))
    services.timer_cancel(timer=timer, reason="no longer needed", by="test")
    make_due(timer)

    assert engine.fire_due(bucket=None) == 0
    timer.refresh_from_db()
    assert timer.status == TimerStatus.CANCELLED
    assert "fired" not in event_kinds(timer)


def test_cancel_after_the_claim_is_a_conflict(tenant: Tenant, broker: redis.Redis) -> None:
    now = timezone.now()
    timer = Timer.objects.create(
        tenant=tenant, name="busy", status=TimerStatus.ARMED, duration_ms=1, created_at=now,
        fire_at=now - timedelta(milliseconds=1), state_version=2,
        action_bundle={"actions": [{"id": "a", "kind": "webhook", "parameters": {}}]},
    )
    engine.timers_claim_due(limit=10)

    with pytest.raises(Conflict):
        services.timer_cancel(timer=timer, reason="late", by="test")
    timer.refresh_from_db()
    assert timer.status == TimerStatus.FIRED


def test_cancel_racing_the_claim_leaves_exactly_one_winner(tenant: Tenant, broker: redis.Redis) -> None:
    timers = [make_timer(tenant, in_=timedelta(seconds=5)) for _ in range(40)]
    Timer.objects.update(fire_at=timezone.now() - timedelta(milliseconds=1))
    def cancel_all() -> None:
        for t in timers:
            try:
                services.timer_cancel(timer=Timer.objects.get(pk=t.pk), reason="race", by="test")
            except Conflict:
                pass

    run_in_threads(cancel_all, lambda: engine.fire_due(bucket=None))

    for t in timers:
        kinds = event_kinds(t)
        t.refresh_from_db()
        # Either cancelled and never fired, or fired once and then settled; never both.
        assert ("cancelled" in kinds) != ("fired" in kinds)
        assert kinds.count("fired") <= 1
        assert t.status in (TimerStatus.CANCELLED, TimerStatus.SETTLED)


def test_concurrent_claimers_fire_every_timer_exactly_once(tenant: Tenant, broker: redis.Redis) -> None:
    now = timezone.now()
    Timer.objects.bulk_create(
        [
            Timer(tenant=tenant, name=f"c{i}", status=TimerStatus.ARMED, duration_ms=1, created_at=now,
                  fire_at=now - timedelta(milliseconds=i), state_version=2)
            for i in range(600)
        ]
    )
    def claimer() -> None:
        while engine.timers_claim_due(limit=50):
            pass

    run_in_threads(*[claimer] * 4)

    fired = Counter(TimerEvent.objects.filter(kind="fired").values_list("timer_id", flat=True))
    assert len(fired) == 600
    assert set(fired.values()) == {1}
    assert Timer.objects.exclude(status=TimerStatus.SETTLED).count() == 0


def test_two_reconcilers_at_once_arm_each_timer_once(tenant: Tenant, broker: redis.Redis) -> None:
    now = timezone.now()
    Timer.objects.bulk_create(
        [
            Timer(tenant=tenant, name=f"s{i}", status=TimerStatus.SCHEDULED, duration_ms=1, created_at=now,
                  fire_at=now + timedelta(seconds=30, milliseconds=i * 7), state_version=1)
            for i in range(500)
        ]
    )
    def arm() -> int:
        armed = 0
        while n := engine.timers_arm_due(horizon_end=now + timedelta(minutes=1), limit=40):
            armed += n
        return armed

    assert sum(run_in_threads(arm, arm, arm)) == 500
    armed = Counter(TimerEvent.objects.filter(kind="armed").values_list("timer_id", flat=True))
    assert len(armed) == 500 and set(armed.values()) == {1}


def test_repair_publishes_a_tick_for_an_armed_timer_whose_tick_was_lost(tenant: Tenant, broker: redis.Redis) -> None:
    timer = make_timer(tenant, in_=timedelta(seconds=5))
    make_due(timer, ago=timedelta(seconds=10))
    broker.flushdb()  # the tick and its marker are gone

    report = engine.reconcile()

    assert report.repaired == 1
    assert any(h["eta"] is None for h in queued_ticks(broker))
    engine.fire_due(bucket=None)
    timer.refresh_from_db()
    assert timer.status == TimerStatus.SETTLED
    assert timer.lateness_ms is not None and timer.lateness_ms >= 10_000


def test_reconciler_republishes_ticks_lost_in_a_redis_flush_before_they_are_due(
    tenant: Tenant, broker: redis.Redis
) -> None:
    make_timer(tenant, in_=timedelta(seconds=40))
    make_timer(tenant, in_=timedelta(seconds=50))
    assert engine.reconcile().ticks_republished == 0  # markers present: nothing to do
    broker.flushdb()

    report = engine.reconcile()

    assert report.ticks_republished == 2
    assert len(queued_ticks(broker)) == 2
    assert engine.reconcile().ticks_republished == 0


def test_reconcile_recovers_runs_stuck_past_their_lease_and_lost_retries(tenant: Tenant, broker: redis.Redis) -> None:
    now = timezone.now()
    timer = Timer.objects.create(
        tenant=tenant, name="r", status=TimerStatus.FIRED, duration_ms=1, created_at=now, fire_at=now, state_version=3
    )
    stuck = ActionRun.objects.create(timer=timer, action_id="a", kind="webhook", status=RunStatus.RUNNING,
                                     lease_expires_at=now - timedelta(seconds=1))
    lost = ActionRun.objects.create(timer=timer, action_id="b", kind="webhook", status=RunStatus.PENDING,
                                    next_attempt_at=now - timedelta(minutes=1))
    ActionRun.objects.create(timer=timer, action_id="c", kind="webhook", status=RunStatus.PENDING, next_attempt_at=None)
    ActionRun.objects.create(timer=timer, action_id="d", kind="webhook", status=RunStatus.RUNNING,
                             lease_expires_at=now + timedelta(minutes=5))

    report = engine.reconcile()

    assert report.runs_recovered == 2
    published = [json.loads(raw)["headers"] for raw in broker.lrange("actions", 0, -1)]
    assert sorted(h["argsrepr"] for h in published) == sorted([repr([str(stuck.id)]), repr([str(lost.id)])])


def test_illegal_transitions_are_refused(tenant: Tenant, broker: redis.Redis) -> None:
    scheduled = make_timer(tenant, in_=timedelta(minutes=10))
    assert services.timer_finish(timer_id=scheduled.pk, failed_actions=[]) is False  # not fired

    settled = make_timer(tenant, in_=timedelta(seconds=5))
    make_due(settled)
    engine.timers_claim_due(limit=10)
    settled.refresh_from_db()
    assert settled.status == TimerStatus.SETTLED
    again = services.timer_cancel(timer=settled, reason="too late", by="test")
    assert again.status == TimerStatus.SETTLED  # terminal: unchanged, no event
    assert services.timer_finish(timer_id=settled.pk, failed_actions=["x"]) is False
    assert event_kinds(settled) == ["created", "armed", "fired", "settled"]

    with pytest.raises(Exception, match="timer_status_valid"):
        Timer.objects.filter(pk=settled.pk).update(status="exploded")


def test_reconcile_timers_command_prints_what_it_did(tenant: Tenant, broker: redis.Redis, capsys: Any) -> None:
    make_timer(tenant, in_=timedelta(seconds=90))
    Timer.objects.update(fire_at=timezone.now() + timedelta(seconds=30))

    call_command("reconcile_timers")

    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["armed"] == 1
    assert set(report) >= {"armed", "ticksRepublished", "repaired", "runsRecovered", "durationMs"}


def test_a_tick_republished_after_running_early_is_not_duplicated_by_the_reconciler(
    tenant: Tenant, broker: redis.Redis
) -> None:
    timer = make_timer(tenant, in_=timedelta(seconds=20))
    broker.delete("timers")
    engine.fire_due(bucket=ticks.bucket_of(timer.fire_at))
    assert len(queued_ticks(broker)) == 1

    assert engine.reconcile().ticks_republished == 0
    assert len(queued_ticks(broker)) == 1


def test_an_early_tick_finds_a_timer_in_the_last_millisecond_of_its_bucket(tenant: Tenant, broker: redis.Redis) -> None:
    start = ticks.next_bucket_start(ticks.bucket_of(timezone.now() + timedelta(seconds=5)))
    fire_at = start - timedelta(microseconds=300)  # the same bucket as start - 1 tick, at its very end
    timer, _ = services.timer_create(tenant=tenant, spec=TimerSpec(name="edge", fire_at=fire_at, duration_ms=5000))
    bucket = ticks.bucket_of(fire_at)
    assert ticks.next_bucket_start(bucket) == start
    broker.delete("timers")

    assert engine.fire_due(bucket=bucket) == 0

    assert len(queued_ticks(broker)) == 1
    timer.refresh_from_db()
    assert timer.status == TimerStatus.ARMED


def test_one_reconcile_pass_arms_a_backlog_larger_than_its_batch(
    tenant: Tenant, broker: redis.Redis, settings: Any
) -> None:
    settings.MINOOTS_RECONCILE_BATCH = 3
    now = timezone.now()
    Timer.objects.bulk_create(
        [
            Timer(tenant=tenant, name=f"b{i}", status=TimerStatus.SCHEDULED, duration_ms=1, created_at=now,
                  fire_at=now - timedelta(seconds=30) + timedelta(milliseconds=i), state_version=1)
            for i in range(10)
        ]
    )

    report = engine.reconcile()

    assert report.armed == 10
    assert Timer.objects.filter(status=TimerStatus.SCHEDULED).count() == 0
