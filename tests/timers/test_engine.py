"""The scheduling steps called directly against real Postgres and Redis (no worker)."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.core.management import call_command
from django.db import IntegrityError
from django.utils import timezone

from actions.models import ActionRun, RunStatus
from tests.broker import QueuedTask, queued_tasks
from tests.concurrency import run_in_threads
from tests.factories import make_run, make_timer, make_timers, schedule_timer
from timers import engine, services, ticks
from timers.models import Tenant, Timer, TimerEvent, TimerStatus
from timers.services import Conflict, TimerSpec

pytestmark = pytest.mark.django_db(transaction=True)


def queued_ticks(broker: redis.Redis) -> list[QueuedTask]:
    """The fire_due messages waiting in the `timers` queue, oldest first."""
    return queued_tasks(broker, "timers", task="timers.fire_due")


def make_due(timer: Timer, ago: timedelta = timedelta(milliseconds=5)) -> None:
    Timer.objects.filter(pk=timer.pk).update(fire_at=timezone.now() - ago)


def event_kinds(timer: Timer) -> list[str]:
    return list(TimerEvent.objects.filter(timer=timer).order_by("id").values_list("kind", flat=True))


def test_timer_due_within_the_horizon_is_armed_at_creation_with_one_tick(tenant: Tenant, broker: redis.Redis) -> None:
    timer = schedule_timer(tenant=tenant, in_=timedelta(seconds=30))

    timer.refresh_from_db()
    assert timer.status == TimerStatus.ARMED
    assert event_kinds(timer) == ["created", "armed"]
    [tick] = queued_ticks(broker)
    assert tick.kwargs == {"bucket": ticks.bucket_of(timer.fire_at)}
    # Due at the bucket's first instant, before any of its timers (a later create may fall earlier).
    assert tick.eta == ticks.tick_eta(ticks.bucket_of(timer.fire_at)) <= timer.fire_at


def test_timers_in_the_same_tick_bucket_share_one_message(tenant: Tenant, broker: redis.Redis) -> None:
    fire_at = timezone.now() + timedelta(seconds=20)
    fire_at = fire_at.replace(microsecond=(fire_at.microsecond // 10_000) * 10_000)  # bucket start
    for _ in range(50):
        services.timer_create(tenant=tenant, spec=TimerSpec(name="same", fire_at=fire_at))

    assert Timer.objects.filter(status=TimerStatus.ARMED).count() == 50
    assert len(queued_ticks(broker)) == 1


def test_timer_beyond_the_horizon_stays_scheduled_until_the_reconciler_arms_it(
    tenant: Tenant, broker: redis.Redis
) -> None:
    timer = schedule_timer(tenant=tenant, in_=timedelta(minutes=10))
    timer.refresh_from_db()
    assert timer.status == TimerStatus.SCHEDULED
    assert queued_ticks(broker) == []

    report = engine.reconcile(now=timezone.now() + timedelta(minutes=9, seconds=30))

    timer.refresh_from_db()
    assert report.armed == 1
    assert timer.status == TimerStatus.ARMED
    assert len(queued_ticks(broker)) == 1


def test_due_timer_without_actions_is_fired_then_settled_with_its_lateness(tenant: Tenant, broker: redis.Redis) -> None:
    timer = schedule_timer(tenant=tenant, in_=timedelta(seconds=5))
    make_due(timer, ago=timedelta(milliseconds=250))

    claimed = services.timers_fire(limit=10)

    timer.refresh_from_db()
    assert [c.id for c in claimed] == [timer.id]
    assert timer.status == TimerStatus.SETTLED
    assert timer.fired_at is not None and timer.settled_at == timer.fired_at
    # latenessMs is firedAt - fireAt in whole milliseconds, from the stored values; the timer
    # was due 250 ms before the claim, so it cannot be less.
    assert timer.lateness_ms == (timer.fired_at - timer.fire_at) // timedelta(milliseconds=1)
    assert timer.lateness_ms >= 250
    assert event_kinds(timer) == ["created", "armed", "fired", "settled"]
    fired = TimerEvent.objects.get(timer=timer, kind="fired")
    assert (fired.occurred_at, fired.data) == (timer.fired_at, {"latenessMs": timer.lateness_ms})
    assert timer.state_version == 4


def test_a_batch_without_actions_is_claimed_fired_and_settled_in_one_statement(
    tenant: Tenant, broker: redis.Redis
) -> None:
    """What a burst relies on: on Postgres one statement claims the batch, writes each timer's
    fired event and settles those without actions (a second UPDATE rewrote every index entry of
    each row again); the bundles that ask for nothing settle, as ``has_actions`` says."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    Timer.objects.all().delete()
    due = timezone.now() - timedelta(milliseconds=50)
    plain = make_timers(tenant=tenant, fire_ats=[due] * 5, name_prefix="plain")
    odd = make_timers(
        tenant=tenant,
        fire_ats=[due] * 3,
        name_prefix="odd",
        action_bundle={"actions": []},
    )
    Timer.objects.filter(pk=odd[1].pk).update(action_bundle={"actions": "not a list"})
    Timer.objects.filter(pk=odd[2].pk).update(action_bundle=["not", "an", "object"])

    with CaptureQueriesContext(connection) as captured:
        claimed = services.timers_fire(limit=100)

    statements = [
        q["sql"]
        for q in captured.captured_queries
        if not q["sql"].startswith(("SAVEPOINT", "RELEASE", "BEGIN", "COMMIT"))
    ]
    if connection.vendor == "postgresql":  # SQLite serialises writers anyway: a read, then guarded updates
        assert len(statements) == 1, statements
    assert sorted(c.id for c in claimed) == sorted(t.id for t in [*plain, *odd])
    for timer in [*plain, *odd]:
        timer.refresh_from_db()
        assert timer.status == TimerStatus.SETTLED and timer.settled_at == timer.fired_at is not None
        assert event_kinds(timer) == ["fired", "settled"]  # make_timers writes no created/armed events
        versions = list(TimerEvent.objects.filter(timer=timer).order_by("id").values_list("state_version", flat=True))
        assert versions == [timer.state_version - 1, timer.state_version]


def test_fired_timer_with_actions_gets_pending_runs_and_stays_fired(tenant: Tenant, broker: redis.Redis) -> None:
    Timer.objects.all().delete()
    timer = make_timer(
        tenant=tenant,
        name="with-actions",
        concurrency=1,
        actions=[{"id": "a", "kind": "webhook", "parameters": {}}, {"id": "b", "kind": "webhook", "parameters": {}}],
    )

    services.timers_fire(limit=10)

    timer.refresh_from_db()
    assert timer.status == TimerStatus.FIRED
    runs = list(ActionRun.objects.filter(timer=timer).order_by("position"))
    assert [r.action_id for r in runs] == ["a", "b"]
    assert all(r.status == RunStatus.PENDING for r in runs)
    # Only the first run may start (concurrency 1); the second waits without a due time.
    assert runs[0].next_attempt_at is not None and runs[1].next_attempt_at is None


def test_timer_not_yet_due_is_not_claimed(tenant: Tenant, broker: redis.Redis) -> None:
    timer = schedule_timer(tenant=tenant, in_=timedelta(seconds=30))

    assert services.timers_fire(limit=10) == []
    timer.refresh_from_db()
    assert timer.status == TimerStatus.ARMED


def test_duplicate_ticks_fire_a_timer_once(tenant: Tenant, broker: redis.Redis) -> None:
    timer = schedule_timer(tenant=tenant, in_=timedelta(seconds=5))
    make_due(timer)
    bucket = ticks.bucket_of(timer.fire_at)

    fired_first = engine.fire_due(bucket=bucket)
    fired_again = engine.fire_due(bucket=bucket)
    fired_third = engine.fire_due(bucket=None)

    assert (fired_first, fired_again, fired_third) == (1, 0, 0)
    assert event_kinds(timer).count("fired") == 1


def test_early_tick_fires_nothing_and_republishes_itself_for_the_bucket(tenant: Tenant, broker: redis.Redis) -> None:
    timer = schedule_timer(tenant=tenant, in_=timedelta(seconds=3))
    broker.delete("timers")

    fired = engine.fire_due(bucket=ticks.bucket_of(timer.fire_at))

    timer.refresh_from_db()
    assert fired == 0
    assert timer.status == TimerStatus.ARMED
    [republished] = queued_ticks(broker)
    assert republished.kwargs == {"bucket": ticks.bucket_of(timer.fire_at)}
    assert republished.eta == timer.fire_at  # the timer's own moment, not a poll


def test_one_tick_fires_each_timer_of_its_bucket_when_it_is_due_whatever_the_creation_order(
    tenant: Tenant, broker: redis.Redis
) -> None:
    bucket = ticks.bucket_of(timezone.now() + timedelta(milliseconds=300))
    start = ticks.tick_eta(bucket)
    late_one, _ = services.timer_create(
        tenant=tenant, spec=TimerSpec(name="late", fire_at=start + timedelta(milliseconds=8))
    )
    # Created second but due first: its bucket already has a tick, which must not wait for "late".
    early_one, _ = services.timer_create(
        tenant=tenant, spec=TimerSpec(name="early", fire_at=start + timedelta(milliseconds=2))
    )
    [tick] = queued_ticks(broker)
    assert tick.eta == start
    broker.delete("timers")
    while timezone.now() < start:
        time.sleep(0.001)

    assert engine.fire_due(bucket=bucket) == 2

    early_one.refresh_from_db()
    late_one.refresh_from_db()
    assert early_one.fired_at is not None and late_one.fired_at is not None
    # Each claimed on its own once it was due (the database's clock), the earlier first, and
    # without publishing the tick again for the later one.
    assert early_one.fire_at <= early_one.fired_at < late_one.fire_at <= late_one.fired_at
    assert queued_ticks(broker) == []


def test_a_tick_for_a_bucket_of_one_timer_looks_claims_and_looks_once_each(
    tenant: Tenant, broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A steady stream of timers is mostly one timer per bucket: its tick sleeps until the timer
    is due (no claim of nothing at the bucket's first instant), claims it, and after forgetting
    its marker looks once for a timer created meanwhile (no look before forgetting: the bucket
    had no other). It used to make two claims and three looks."""
    from timers import queries

    calls: list[str] = []
    real_claim, real_look = queries.claim_due_and_settle, queries.first_armed_fire_ats
    real_first_look = queries.first_armed_fire_ats_and_now

    def claim(**kwargs: Any) -> Any:
        calls.append("claim")
        return real_claim(**kwargs)

    def look(**kwargs: Any) -> Any:
        calls.append("look")
        return real_look(**kwargs)

    def first_look(**kwargs: Any) -> Any:
        calls.append("look")
        with monkeypatch.context() as inner:  # on SQLite it looks through first_armed_fire_ats
            inner.setattr(queries, "first_armed_fire_ats", real_look)
            return real_first_look(**kwargs)

    bucket = ticks.bucket_of(timezone.now() + timedelta(milliseconds=300))
    start = ticks.tick_eta(bucket)
    timer, _ = services.timer_create(
        tenant=tenant, spec=TimerSpec(name="one", fire_at=start + timedelta(milliseconds=5))
    )
    broker.delete("timers")
    while timezone.now() < start:
        time.sleep(0.001)
    monkeypatch.setattr(queries, "claim_due_and_settle", claim)
    monkeypatch.setattr(queries, "first_armed_fire_ats", look)
    monkeypatch.setattr(queries, "first_armed_fire_ats_and_now", first_look)

    assert engine.fire_due(bucket=bucket) == 1

    assert calls == ["look", "claim", "look"]
    timer.refresh_from_db()
    assert timer.fired_at is not None and timer.fire_at <= timer.fired_at
    assert queued_ticks(broker) == []


@pytest.mark.postgres_only(reason="on SQLite the database's clock is this process's")
def test_a_worker_clock_behind_the_databases_does_not_delay_its_buckets_first_timer(
    tenant: Tenant, broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tick's first wait is measured on the database's clock, the one its claim uses: a
    worker 40 ms behind would otherwise sleep 40 ms past the timer's fire_at before claiming it."""
    bucket = ticks.bucket_of(timezone.now() + timedelta(milliseconds=300))
    start = ticks.tick_eta(bucket)
    services.timer_create(tenant=tenant, spec=TimerSpec(name="one", fire_at=start + timedelta(milliseconds=8)))
    while timezone.now() < start:
        time.sleep(0.001)
    real_now, real_sleep = timezone.now, time.sleep
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(timezone, "now", lambda: real_now() - timedelta(milliseconds=40))
    monkeypatch.setattr(time, "sleep", sleep)

    assert engine.fire_due(bucket=bucket) == 1

    # At most the 8 ms to its fire_at (none if the claim came later than that), never the 48.
    assert not slept or slept[0] < 0.03, slept


def test_a_timer_created_while_its_buckets_tick_claims_the_one_before_it_fires_in_that_tick(
    tenant: Tenant, broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tick saw one armed timer in its bucket and skips the look before forgetting; a second
    timer committed before it forgets is found by the look after, and fired by the same tick."""
    from timers import queries

    bucket = ticks.bucket_of(timezone.now() + timedelta(milliseconds=300))
    start = ticks.tick_eta(bucket)
    first, _ = services.timer_create(
        tenant=tenant, spec=TimerSpec(name="first", fire_at=start + timedelta(milliseconds=2))
    )
    broker.delete("timers")
    real_claim = queries.claim_due_and_settle
    second: list[Timer] = []

    def claim_then_create(**kwargs: Any) -> Any:
        result = real_claim(**kwargs)
        if not second:
            made, _ = services.timer_create(
                tenant=tenant, spec=TimerSpec(name="second", fire_at=start + timedelta(milliseconds=8))
            )
            second.append(made)
        return result

    monkeypatch.setattr(queries, "claim_due_and_settle", claim_then_create)
    while timezone.now() < start:
        time.sleep(0.001)

    assert engine.fire_due(bucket=bucket) == 2

    for timer in (first, second[0]):
        timer.refresh_from_db()
        assert timer.status == TimerStatus.SETTLED
    assert queued_ticks(broker) == []  # the bucket's marker was there: the create published no tick


def test_cancelled_timer_never_fires(tenant: Tenant, broker: redis.Redis) -> None:
    timer = schedule_timer(tenant=tenant, in_=timedelta(seconds=5))
    services.timer_cancel(timer=timer, reason="no longer needed", by="test")
    make_due(timer)

    assert engine.fire_due(bucket=None) == 0
    timer.refresh_from_db()
    assert timer.status == TimerStatus.CANCELLED
    assert "fired" not in event_kinds(timer)


def test_cancel_after_the_claim_ends_the_fired_timer_cancelled(tenant: Tenant, broker: redis.Redis) -> None:
    timer = make_timer(tenant=tenant, name="busy", actions=[{"id": "a", "kind": "webhook", "parameters": {}}])
    services.timers_fire(limit=10)

    services.timer_cancel(timer=timer, reason="late", by="test")
    timer.refresh_from_db()
    assert timer.status == TimerStatus.CANCELLED
    assert timer.fired_at is not None and timer.cancelled_by == "test"


def test_cancel_racing_the_claim_leaves_exactly_one_winner(tenant: Tenant, broker: redis.Redis) -> None:
    timers = [schedule_timer(tenant=tenant, in_=timedelta(seconds=5)) for _ in range(40)]
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
        assert t.status == (TimerStatus.CANCELLED if "cancelled" in kinds else TimerStatus.SETTLED)


def test_concurrent_claimers_fire_every_timer_exactly_once(tenant: Tenant, broker: redis.Redis) -> None:
    now = timezone.now()
    make_timers(tenant=tenant, name_prefix="c", fire_ats=[now - timedelta(milliseconds=i) for i in range(600)])

    def claimer() -> None:
        while services.timers_fire(limit=50):
            pass

    run_in_threads(*[claimer] * 4)

    fired = Counter(TimerEvent.objects.filter(kind="fired").values_list("timer_id", flat=True))
    assert len(fired) == 600
    assert set(fired.values()) == {1}
    assert Timer.objects.exclude(status=TimerStatus.SETTLED).count() == 0


def test_two_reconcilers_at_once_arm_each_timer_once(tenant: Tenant, broker: redis.Redis) -> None:
    now = timezone.now()
    make_timers(
        tenant=tenant,
        status=TimerStatus.SCHEDULED,
        name_prefix="s",
        fire_ats=[now + timedelta(seconds=30, milliseconds=i * 7) for i in range(500)],
    )

    def arm() -> int:
        armed = 0
        while n := services.timers_arm(horizon_end=now + timedelta(minutes=1), limit=40):
            armed += n
        return armed

    assert sum(run_in_threads(arm, arm, arm)) == 500
    armed = Counter(TimerEvent.objects.filter(kind="armed").values_list("timer_id", flat=True))
    assert len(armed) == 500 and set(armed.values()) == {1}


def test_repair_publishes_a_tick_for_an_armed_timer_whose_tick_was_lost(tenant: Tenant, broker: redis.Redis) -> None:
    timer = schedule_timer(tenant=tenant, in_=timedelta(seconds=5))
    make_due(timer, ago=timedelta(seconds=10))
    broker.flushdb()  # the tick and its marker are gone

    report = engine.reconcile()

    assert report.repaired == 1
    assert any(tick.eta is None for tick in queued_ticks(broker))
    engine.fire_due(bucket=None)
    timer.refresh_from_db()
    assert timer.status == TimerStatus.SETTLED
    assert timer.lateness_ms is not None and timer.lateness_ms >= 10_000


def test_reconciler_republishes_ticks_lost_in_a_redis_flush_before_they_are_due(
    tenant: Tenant, broker: redis.Redis
) -> None:
    schedule_timer(tenant=tenant, in_=timedelta(seconds=40))
    schedule_timer(tenant=tenant, in_=timedelta(seconds=50))
    assert engine.reconcile().ticks_republished == 0  # markers present: nothing to do
    broker.flushdb()

    report = engine.reconcile()

    assert report.ticks_republished == 2
    assert len(queued_ticks(broker)) == 2
    assert engine.reconcile().ticks_republished == 0


def test_reconcile_recovers_runs_stuck_past_their_lease_and_lost_retries(tenant: Tenant, broker: redis.Redis) -> None:
    now = timezone.now()
    timer = make_timer(tenant=tenant, name="r", status=TimerStatus.FIRED, fire_at=now)
    stuck = make_run(timer=timer, action_id="a", status=RunStatus.RUNNING, lease_expires_at=now - timedelta(seconds=1))
    lost = make_run(timer=timer, action_id="b", next_attempt_at=now - timedelta(minutes=1))
    make_run(timer=timer, action_id="c", next_attempt_at=None)
    make_run(timer=timer, action_id="d", status=RunStatus.RUNNING, lease_expires_at=now + timedelta(minutes=5))

    report = engine.reconcile()

    assert report.runs_recovered == 2
    published = queued_tasks(broker, "actions")
    assert {m.task for m in published} == {"actions.run_action"}
    assert sorted(m.args[0] for m in published) == sorted([str(stuck.id), str(lost.id)])


def test_illegal_transitions_are_refused(tenant: Tenant, broker: redis.Redis) -> None:
    scheduled = schedule_timer(tenant=tenant, in_=timedelta(minutes=10))
    assert services.timers_settle(timer_ids=[scheduled.pk]) == []  # not fired

    settled = schedule_timer(tenant=tenant, in_=timedelta(seconds=5))
    make_due(settled)
    services.timers_fire(limit=10)
    settled.refresh_from_db()
    assert settled.status == TimerStatus.SETTLED
    again = services.timer_cancel(timer=settled, reason="too late", by="test")
    assert again.status == TimerStatus.SETTLED  # terminal: unchanged, no event
    assert services.timer_fail(timer_id=settled.pk, failed_actions=["x"]) is False
    assert event_kinds(settled) == ["created", "armed", "fired", "settled"]

    with pytest.raises(IntegrityError, match="timer_status_valid"):
        Timer.objects.filter(pk=settled.pk).update(status="exploded")


def test_reconcile_timers_command_prints_what_it_did(tenant: Tenant, broker: redis.Redis, capsys: Any) -> None:
    schedule_timer(tenant=tenant, in_=timedelta(seconds=90))
    Timer.objects.update(fire_at=timezone.now() + timedelta(seconds=30))

    call_command("reconcile_timers")

    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["armed"] == 1
    assert set(report) >= {"armed", "ticksRepublished", "repaired", "runsRecovered", "durationMs"}


def test_a_tick_republished_after_running_early_is_not_duplicated_by_the_reconciler(
    tenant: Tenant, broker: redis.Redis
) -> None:
    timer = schedule_timer(tenant=tenant, in_=timedelta(seconds=20))
    broker.delete("timers")
    engine.fire_due(bucket=ticks.bucket_of(timer.fire_at))
    assert len(queued_ticks(broker)) == 1

    assert engine.reconcile().ticks_republished == 0
    assert len(queued_ticks(broker)) == 1


def test_an_early_tick_finds_a_timer_in_the_last_millisecond_of_its_bucket(tenant: Tenant, broker: redis.Redis) -> None:
    start = ticks.next_bucket_start(ticks.bucket_of(timezone.now() + timedelta(seconds=5)))
    fire_at = start - timedelta(microseconds=300)  # the same bucket as start - 1 tick, at its very end
    timer, _ = services.timer_create(tenant=tenant, spec=TimerSpec(name="edge", fire_at=fire_at))
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
    make_timers(
        tenant=tenant,
        status=TimerStatus.SCHEDULED,
        name_prefix="b",
        fire_ats=[now - timedelta(seconds=30) + timedelta(milliseconds=i) for i in range(10)],
    )

    report = engine.reconcile()

    assert report.armed == 10
    assert Timer.objects.filter(status=TimerStatus.SCHEDULED).count() == 0
