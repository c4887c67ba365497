"""The batch path for first attempts (actions.batch), called directly."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.utils import timezone

from actions.batch import runs_execute_batch
from actions.execution import run_execute
from actions.models import ActionAttempt, ActionRun, AttemptOutcome, RunStatus
from actions.runners.webhook import WebhookRunner
from actions.runners.webhook_transport import TRANSPORT
from tests.actions.support import Receiver, Reply, webhook
from tests.broker import queued_tasks
from tests.factories import make_timer
from timers import services
from timers.models import Tenant, Timer, TimerEvent, TimerStatus

pytestmark = pytest.mark.django_db


def armed_due(tenant: Tenant, actions: list[dict[str, Any]], *, concurrency: int = 1) -> Timer:
    return make_timer(
        tenant=tenant,
        name="b",
        actions=actions,
        concurrency=concurrency,
        retry_policy={"maxAttempts": 3, "backoffInitialMs": 10, "backoffMultiplier": 2},
    )


def pending_run_ids(timers: list[Timer]) -> list[Any]:
    return list(
        ActionRun.objects.filter(timer__in=timers, status=RunStatus.PENDING, next_attempt_at__isnull=False)
        .order_by("timer", "position")
        .values_list("pk", flat=True)
    )


def test_a_batch_runs_every_first_attempt_and_settles_every_timer(
    tenant: Tenant, receiver: Receiver, allow_private: None, settings: Any
) -> None:
    # 12 runs of one tenant, alone: more than its default cap (8), all in the batch's one slot.
    assert settings.MINOOTS_TENANT_ACTION_CONCURRENCY == 8
    timers = [armed_due(tenant, [webhook("hook", f"{receiver.url}/t{i}")]) for i in range(12)]
    services.timers_fire(limit=100)

    ran = runs_execute_batch(run_ids=pending_run_ids(timers))

    assert ran == 12
    assert sorted(r.path for r in receiver.requests) == sorted(f"/t{i}" for i in range(12))
    for timer in timers:
        timer.refresh_from_db()
        assert timer.status == TimerStatus.SETTLED
        kinds = list(TimerEvent.objects.filter(timer=timer).order_by("id").values_list("kind", flat=True))
        assert kinds == ["fired", "action.succeeded", "settled"]
        attempt = ActionAttempt.objects.get(run__timer=timer)
        assert (attempt.number, attempt.outcome, attempt.http_status) == (1, AttemptOutcome.SUCCEEDED, 200)
        assert attempt.finished_at is not None


def test_a_failure_in_a_batch_is_retried_while_the_others_settle(
    tenant: Tenant, receiver: Receiver, allow_private: None
) -> None:
    receiver.script("/bad", Reply(status=503))
    good = armed_due(tenant, [webhook("hook", f"{receiver.url}/good")])
    bad = armed_due(tenant, [webhook("hook", f"{receiver.url}/bad")])
    services.timers_fire(limit=100)

    runs_execute_batch(run_ids=pending_run_ids([good, bad]))

    good.refresh_from_db()
    bad.refresh_from_db()
    assert good.status == TimerStatus.SETTLED
    assert bad.status == TimerStatus.FIRED
    run = ActionRun.objects.get(timer=bad)
    assert run.status == RunStatus.PENDING and run.next_attempt_at is not None
    assert ActionAttempt.objects.get(run=run).outcome == AttemptOutcome.TRANSIENT

    ActionRun.objects.filter(pk=run.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert run_execute(run_id=run.pk) is True
    bad.refresh_from_db()
    assert bad.status == TimerStatus.SETTLED
    assert len(receiver.at("/bad")) == 2


def test_a_duplicate_batch_message_runs_nothing_again(tenant: Tenant, receiver: Receiver, allow_private: None) -> None:
    timers = [armed_due(tenant, [webhook("hook", f"{receiver.url}/d{i}")]) for i in range(3)]
    services.timers_fire(limit=100)
    ids = pending_run_ids(timers)

    assert runs_execute_batch(run_ids=ids) == 3
    assert runs_execute_batch(run_ids=ids) == 0
    assert len(receiver.requests) == 3
    assert ActionAttempt.objects.count() == 3


def test_a_batch_success_starts_the_next_waiting_action_of_the_timer(
    tenant: Tenant,
    receiver: Receiver,
    allow_private: None,
    broker: redis.Redis,
    django_capture_on_commit_callbacks: Any,
) -> None:
    timer = armed_due(tenant, [webhook("first", f"{receiver.url}/1"), webhook("second", f"{receiver.url}/2")])
    services.timers_fire(limit=100)
    first, second = ActionRun.objects.filter(timer=timer).order_by("position")
    assert second.next_attempt_at is None
    broker.delete("actions")

    with django_capture_on_commit_callbacks(execute=True):
        runs_execute_batch(run_ids=[first.pk])

    second.refresh_from_db()
    timer.refresh_from_db()
    assert second.status == RunStatus.PENDING and second.next_attempt_at is not None
    assert timer.status == TimerStatus.FIRED
    assert queued_tasks(broker, "actions") == [("actions.run_action", [str(second.pk)], {}, None)]
    assert run_execute(run_id=second.pk) is True
    timer.refresh_from_db()
    assert timer.status == TimerStatus.SETTLED


def test_fired_timers_publish_their_runs_in_batches(
    tenant: Tenant, broker: redis.Redis, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.MINOOTS_ACTION_BATCH = 4
    for _ in range(10):
        armed_due(tenant, [{"id": "hook", "kind": "webhook", "parameters": {"url": "https://example.com/x"}}])
    broker.delete("actions")

    with django_capture_on_commit_callbacks(execute=True):
        services.timers_fire(limit=100)

    batches = queued_tasks(broker, "actions", task="actions.run_actions")
    assert [len(batch.args[0]) for batch in batches] == [4, 4, 2]
    published = [run_id for batch in batches for run_id in batch.args[0]]
    assert sorted(published) == sorted(str(pk) for pk in ActionRun.objects.values_list("pk", flat=True))


def test_a_run_taken_over_while_the_batch_ran_earlier_attempts_is_not_run_again_by_the_batch(
    tenant: Tenant, receiver: Receiver, allow_private: None, monkeypatch: Any
) -> None:
    from actions import execution, transitions

    first = armed_due(tenant, [webhook("hook", f"{receiver.url}/first")])
    second = armed_due(tenant, [webhook("hook", f"{receiver.url}/second")])
    services.timers_fire(limit=100)
    run_a = ActionRun.objects.get(timer=first)
    run_b = ActionRun.objects.get(timer=second)
    real_attempt = execution.attempt_run

    def slow_first_attempt(claim: Any, **kwargs: Any) -> Any:
        if claim.run.pk == run_a.pk:
            # While A runs, B's lease expires and another worker takes B over.
            ActionRun.objects.filter(pk=run_b.pk).update(lease_expires_at=timezone.now() - timedelta(hours=1))
            assert transitions.runs_claim(run_ids=[run_b.pk]) != []
        return real_attempt(claim, **kwargs)

    monkeypatch.setattr(execution, "attempt_run", slow_first_attempt)
    monkeypatch.setattr(WebhookRunner, "concurrent", False)  # the one-by-one path (commands, files)

    ran = runs_execute_batch(run_ids=[run_a.pk, run_b.pk])

    assert ran == 1
    assert [r.path for r in receiver.requests] == ["/first"]
    run_b.refresh_from_db()
    assert run_b.status == RunStatus.RUNNING and run_b.attempts == 2  # the new owner's attempt, untouched


def test_a_batchs_webhooks_are_in_flight_together_and_each_is_recorded(
    tenant: Tenant, receiver: Receiver, allow_private: None
) -> None:
    # Every receiver holds its answer until all ten requests have arrived: one at a time, the
    # first would hold the rest back until its deadline.
    count = 10
    for i in range(count):
        receiver.script(f"/t{i}", Reply(hang=True))
    timers = [armed_due(tenant, [webhook("hook", f"{receiver.url}/t{i}", timeoutMs=5000)]) for i in range(count)]
    services.timers_fire(limit=100)
    all_arrived = threading.Event()

    def release_once_all_arrived() -> None:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and len(receiver.requests) < count:
            time.sleep(0.01)
        if len(receiver.requests) == count:
            all_arrived.set()
        receiver.release.set()

    watcher = threading.Thread(target=release_once_all_arrived)
    watcher.start()
    ran = runs_execute_batch(run_ids=pending_run_ids(timers))
    watcher.join()

    assert all_arrived.is_set(), f"only {len(receiver.requests)} of {count} requests were in flight together"
    assert ran == count
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == count
    for timer in timers:
        timer.refresh_from_db()
        assert timer.status == TimerStatus.SETTLED
        attempt = ActionAttempt.objects.get(run__timer=timer)
        assert (attempt.outcome, attempt.http_status) == (AttemptOutcome.SUCCEEDED, 200)


def test_a_webhook_waiting_for_one_of_its_workers_connection_slots_is_not_timed_out_by_that_wait(
    tenant: Tenant, receiver: Receiver, allow_private: None, monkeypatch: Any
) -> None:
    # Two slots, four attempts of 1,000 ms each to a receiver answering after 0.6 s: the last
    # two wait 0.6 s for a slot, then get their whole 1,000 ms.
    monkeypatch.setattr(TRANSPORT, "_slots", asyncio.Semaphore(2))
    slow = Reply(raw=[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", b"ok"], interval=0.6)
    for i in range(4):
        receiver.script(f"/s{i}", slow)
    timers = [armed_due(tenant, [webhook("hook", f"{receiver.url}/s{i}", timeoutMs=1000)]) for i in range(4)]
    services.timers_fire(limit=100)

    assert runs_execute_batch(run_ids=pending_run_ids(timers)) == 4

    outcomes = sorted(ActionAttempt.objects.filter(run__timer__in=timers).values_list("outcome", flat=True))
    assert outcomes == [AttemptOutcome.SUCCEEDED] * 4
