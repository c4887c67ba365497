"""run_execute: the claim, retries on the policy's schedule, escalation, the concurrency limit,
recovery of lost runs, and how the timer settles."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any

import pytest
import redis
from django.utils import timezone

from actions import services
from actions.bundle import RetryPolicy
from actions.execution import retry_delay, run_execute
from actions.models import ActionRun, AttemptOutcome, RunStatus
from actions.runners import RUNNERS, ActionContext, ActionResult, Runner
from tests.actions.conftest import FireTimer
from tests.actions.support import NoParams, Receiver, Reply, drive, execute_next, queued_runs, webhook
from tests.concurrency import run_in_threads
from timers.models import Timer, TimerEvent, TimerStatus

pytestmark = pytest.mark.django_db


def runs(timer: Timer) -> dict[str, ActionRun]:
    return {r.action_id: r for r in ActionRun.objects.filter(timer=timer)}


def events(timer: Timer, kind: str) -> list[dict[str, Any]]:
    return list(TimerEvent.objects.filter(timer=timer, kind=kind).order_by("id").values_list("data", flat=True))


# --- claim ---------------------------------------------------------------------------------


def test_duplicate_delivery_of_a_finished_run_is_a_quiet_no_op(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    timer = drive(fire_timer(webhook("a", f"{receiver.url}/a")))
    run = runs(timer)["a"]

    assert run_execute(run_id=run.pk) is False
    assert run_execute(run_id=str(run.pk)) is False

    run.refresh_from_db()
    assert run.attempts == 1
    assert len(receiver.requests) == 1


def test_message_arriving_before_the_retry_is_due_does_nothing(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    receiver.script("/a", Reply(500))
    timer = fire_timer(webhook("a", f"{receiver.url}/a"), retry={"backoffInitialMs": 60_000})
    execute_next(timer)

    assert run_execute(run_id=runs(timer)["a"].pk) is False
    assert len(receiver.requests) == 1
    assert runs(timer)["a"].attempts == 1


def test_unknown_or_malformed_run_ids_are_ignored() -> None:
    assert run_execute(run_id="not-a-uuid") is False
    assert run_execute(run_id="00000000-0000-0000-0000-000000000000") is False


class WorkerKilled(BaseException):
    """Stands for SIGKILL: nothing after the runner call executes."""


@pytest.fixture
def dying_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    class DyingRunner(Runner[NoParams]):
        kind = "dies_once"
        deaths = 0

        def parse(self, parameters: dict[str, Any], *, tenant_id: str) -> NoParams:
            return NoParams()

        def attempt(self, params: NoParams, context: ActionContext) -> ActionResult:
            if DyingRunner.deaths == 0:
                DyingRunner.deaths += 1
                raise WorkerKilled
            return ActionResult(summary="survived")

    monkeypatch.setitem(RUNNERS, DyingRunner.kind, DyingRunner())


def test_run_left_running_by_a_dead_worker_is_retried_after_its_lease(dying_runner: Any, fire_timer: FireTimer) -> None:
    timer = fire_timer({"id": "a", "kind": "dies_once", "parameters": {}})
    run = runs(timer)["a"]
    with pytest.raises(WorkerKilled):
        run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING

    assert run_execute(run_id=run.pk) is False  # still leased: nobody else may run it
    ActionRun.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert services.runs_recover(now=timezone.now(), limit=100) == 1
    assert run_execute(run_id=run.pk) is True

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    attempts = list(run.attempt_records.all())
    assert [(a.number, a.outcome) for a in attempts] == [(1, AttemptOutcome.TRANSIENT), (2, AttemptOutcome.SUCCEEDED)]
    assert "worker lost" in attempts[0].error
    timer.refresh_from_db()
    assert timer.status == TimerStatus.SETTLED


def test_lost_last_attempt_fails_the_run_without_another_attempt(dying_runner: Any, fire_timer: FireTimer) -> None:
    timer = fire_timer({"id": "a", "kind": "dies_once", "parameters": {}}, retry={"maxAttempts": 1})
    run = runs(timer)["a"]
    with pytest.raises(WorkerKilled):
        run_execute(run_id=run.pk)
    ActionRun.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    assert run_execute(run_id=run.pk) is True

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.attempts == 1
    assert [a.outcome for a in run.attempt_records.all()] == [AttemptOutcome.TRANSIENT]
    timer.refresh_from_db()
    assert timer.status == TimerStatus.FAILED


# --- retries -------------------------------------------------------------------------------


def test_retry_schedule_follows_the_policy_until_attempts_are_exhausted(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    receiver.script("/down", *[Reply(503)] * 4)
    timer = fire_timer(
        webhook("a", f"{receiver.url}/down"),
        retry={"maxAttempts": 4, "backoffInitialMs": 10_000, "backoffMultiplier": 3},
    )
    delays = []
    for _ in range(3):
        execute_next(timer)
        run = runs(timer)["a"]
        assert run.status == RunStatus.PENDING and run.next_attempt_at is not None
        failed = run.attempt_records.order_by("number").last()
        assert failed is not None and failed.finished_at is not None
        delays.append((run.next_attempt_at - failed.finished_at).total_seconds())

    # 10 s, 30 s, 90 s after the failed attempt was recorded, each within the ±20 % jitter.
    for delay, base in zip(delays, [10, 30, 90], strict=True):
        assert base * 0.8 <= delay <= base * 1.2, (delays, base)
    execute_next(timer)
    timer.refresh_from_db()
    run = runs(timer)["a"]
    assert run.status == RunStatus.FAILED
    assert run.attempts == 4
    assert len(events(timer, "action.retrying")) == 3
    assert events(timer, "action.failed")[0]["attempt"] == 4
    assert timer.status == TimerStatus.FAILED
    assert timer.failure_reason == "actions failed: a"


def test_retry_delay_is_capped_by_max_backoff_even_when_the_server_asks_for_more(settings: Any) -> None:
    settings.MINOOTS_MAX_BACKOFF = timedelta(minutes=5)
    policy = RetryPolicy(max_attempts=50, backoff_initial_ms=1000, backoff_multiplier=10)

    assert retry_delay(policy, failed_attempt=40) <= timedelta(minutes=5)
    assert retry_delay(policy, failed_attempt=1, retry_after=3600) == timedelta(minutes=5)
    assert retry_delay(policy, failed_attempt=1, retry_after=90) >= timedelta(seconds=90)
    assert timedelta(seconds=0.8) <= retry_delay(policy, failed_attempt=1) <= timedelta(seconds=1.2)


def test_retry_due_within_the_horizon_is_published_with_its_eta(
    receiver: Receiver,
    allow_private: None,
    fire_timer: FireTimer,
    broker: redis.Redis,
    django_capture_on_commit_callbacks: Any,
) -> None:
    receiver.script("/a", Reply(503, b"", {"Retry-After": "5"}))
    timer = fire_timer(webhook("a", f"{receiver.url}/a"))
    run = runs(timer)["a"]

    with django_capture_on_commit_callbacks(execute=True):
        execute_next(timer)

    run.refresh_from_db()
    [(run_id, eta)] = queued_runs(broker)
    assert run_id == str(run.pk)
    assert eta is not None and run.next_attempt_at is not None
    assert abs((eta - run.next_attempt_at).total_seconds()) < 0.01


def test_retry_beyond_the_horizon_is_left_to_the_reconciler_until_it_is_due(
    receiver: Receiver,
    allow_private: None,
    fire_timer: FireTimer,
    broker: redis.Redis,
    django_capture_on_commit_callbacks: Any,
    settings: Any,
) -> None:
    receiver.script("/a", Reply(503, b"", {"Retry-After": "600"}))
    timer = fire_timer(webhook("a", f"{receiver.url}/a"))
    with django_capture_on_commit_callbacks(execute=True):
        execute_next(timer)
    assert queued_runs(broker) == []
    run = runs(timer)["a"]

    with django_capture_on_commit_callbacks(execute=True):
        assert services.runs_recover(now=timezone.now(), limit=100) == 0
    later = run.next_attempt_at + settings.MINOOTS_REPAIR_GRACE + timedelta(seconds=1)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.runs_recover(now=later, limit=100) == 1
    assert [r for r, _ in queued_runs(broker)] == [str(run.pk)]
    # Published and not yet consumed: the next pass leaves it alone.
    assert services.runs_recover(now=later, limit=100) == 0


# --- escalation ----------------------------------------------------------------------------


def test_escalation_runs_once_after_the_given_failed_attempts(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    receiver.script("/primary", *[Reply(500)] * 3)
    action = webhook("deploy-check", f"{receiver.url}/primary")
    action["escalation"] = {"afterAttempts": 2, "escalatesTo": webhook("page-oncall", f"{receiver.url}/page")}
    timer = fire_timer(action, retry={"maxAttempts": 3})

    timer = drive(timer)

    by_id = runs(timer)
    assert by_id["deploy-check"].status == RunStatus.FAILED
    assert by_id["deploy-check"].attempts == 3
    page = by_id["page-oncall"]
    assert page.status == RunStatus.SUCCEEDED
    assert (page.escalation_level, page.escalated_from_id) == (1, by_id["deploy-check"].pk)
    assert len(receiver.at("/page")) == 1
    assert len(receiver.at("/primary")) == 3
    [escalated] = events(timer, "action.escalated")
    assert escalated["failedAttempts"] == 2
    assert escalated["escalatesTo"] == "page-oncall"
    # The escalation reported the failure; it did not undo it.
    assert timer.status == TimerStatus.FAILED
    assert timer.failure_reason == "actions failed: deploy-check"


def test_permanent_failure_escalates_before_reaching_after_attempts(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    receiver.script("/primary", Reply(404))
    action = webhook("a", f"{receiver.url}/primary")
    action["escalation"] = {"afterAttempts": 5, "escalatesTo": webhook("b", f"{receiver.url}/page")}

    timer = drive(fire_timer(action))

    assert runs(timer)["b"].status == RunStatus.SUCCEEDED
    assert timer.failure_reason == "actions failed: a"


def test_action_that_recovers_before_after_attempts_does_not_escalate(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    receiver.script("/primary", Reply(500))
    action = webhook("a", f"{receiver.url}/primary")
    action["escalation"] = {"afterAttempts": 2, "escalatesTo": webhook("b", f"{receiver.url}/page")}

    timer = drive(fire_timer(action))

    assert set(runs(timer)) == {"a"}
    assert timer.status == TimerStatus.SETTLED


def test_nested_escalations_climb_one_level_at_a_time_and_failures_are_all_named(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    receiver.script("/l0", Reply(400))
    receiver.script("/l1", Reply(400))
    level2 = webhook("level-2", f"{receiver.url}/l2")
    level1 = webhook("level-1", f"{receiver.url}/l1")
    level1["escalation"] = {"afterAttempts": 1, "escalatesTo": level2}
    level0 = webhook("level-0", f"{receiver.url}/l0")
    level0["escalation"] = {"afterAttempts": 1, "escalatesTo": level1}

    timer = drive(fire_timer(level0))

    by_id = runs(timer)
    assert [(by_id[a].escalation_level, by_id[a].status) for a in ("level-0", "level-1", "level-2")] == [
        (0, RunStatus.FAILED),
        (1, RunStatus.FAILED),
        (2, RunStatus.SUCCEEDED),
    ]
    assert timer.failure_reason == "actions failed: level-0, level-1"


# --- concurrency ---------------------------------------------------------------------------


def test_concurrency_one_runs_actions_one_after_another_in_list_order(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    timer = fire_timer(*(webhook(name, f"{receiver.url}/{name}") for name in ("a", "b", "c")), concurrency=1)
    scheduled = [r.action_id for r in ActionRun.objects.filter(timer=timer, next_attempt_at__isnull=False)]
    assert scheduled == ["a"]

    execute_next(timer)

    by_id = runs(timer)
    assert by_id["a"].status == RunStatus.SUCCEEDED
    assert by_id["b"].next_attempt_at is not None and by_id["c"].next_attempt_at is None
    timer = drive(timer)
    assert [r.path for r in receiver.requests] == ["/a", "/b", "/c"]
    assert timer.status == TimerStatus.SETTLED


def test_a_run_waiting_for_its_retry_keeps_its_concurrency_slot(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    receiver.script("/a", Reply(500))
    timer = fire_timer(*(webhook(name, f"{receiver.url}/{name}") for name in ("a", "b")), concurrency=1)

    execute_next(timer)

    by_id = runs(timer)
    assert by_id["a"].status == RunStatus.PENDING
    assert by_id["b"].next_attempt_at is None


def test_failed_action_frees_its_slot_for_the_next(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    receiver.script("/a", Reply(400))
    timer = drive(fire_timer(*(webhook(name, f"{receiver.url}/{name}") for name in ("a", "b")), concurrency=1))

    assert [r.path for r in receiver.requests] == ["/a", "/b"]
    assert runs(timer)["b"].status == RunStatus.SUCCEEDED
    assert timer.failure_reason == "actions failed: a"


def test_concurrency_two_starts_two_and_the_third_waits(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    timer = fire_timer(*(webhook(name, f"{receiver.url}/{name}") for name in ("a", "b", "c")), concurrency=2)

    assert sorted(r.action_id for r in ActionRun.objects.filter(timer=timer, next_attempt_at__isnull=False)) == [
        "a",
        "b",
    ]
    execute_next(timer)
    assert runs(timer)["c"].next_attempt_at is not None
    assert drive(timer).status == TimerStatus.SETTLED


def test_reconciler_never_publishes_runs_waiting_for_a_slot(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    timer = fire_timer(*(webhook(name, f"{receiver.url}/{name}") for name in ("a", "b")), concurrency=1)

    recovered = services.runs_recover(now=timezone.now() + timedelta(hours=1), limit=100)

    assert recovered == 1  # "a" (never published in this test); never "b"
    assert runs(timer)["b"].next_attempt_at is None


# --- outcomes ------------------------------------------------------------------------------


def test_each_outcome_is_recorded_in_the_timer_history(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    receiver.script("/a", Reply(503))
    timer = drive(fire_timer(webhook("a", f"{receiver.url}/a"), webhook("b", f"{receiver.url}/b")))

    kinds = list(TimerEvent.objects.filter(timer=timer).order_by("id").values_list("kind", flat=True))
    assert kinds[-5:] == ["fired", "action.retrying", "action.succeeded", "action.succeeded", "settled"]
    retrying = events(timer, "action.retrying")[0]
    assert (retrying["actionId"], retrying["attempt"], retrying["httpStatus"]) == ("a", 1, 503)
    assert "nextAttemptAt" in retrying


def test_timer_detail_shows_runs_with_their_attempts(
    client: Any, receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    receiver.script("/a", Reply(500, b"nope"))
    timer = drive(fire_timer(webhook("a", f"{receiver.url}/a")))

    body = client.get(f"/api/timers/{timer.pk}").json()

    assert body["status"] == "settled"
    [run] = body["actionRuns"]
    assert (run["actionId"], run["status"], run["attempts"]) == ("a", "succeeded", 2)
    assert [(a["number"], a["outcome"], a["httpStatus"]) for a in run["attemptRecords"]] == [
        (1, "transient_failure", 500),
        (2, "succeeded", 200),
    ]
    assert run["attemptRecords"][0]["outputExcerpt"] == "nope"


@pytest.mark.django_db(transaction=True)
def test_same_run_delivered_to_many_workers_at_once_executes_once(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    timer = fire_timer(webhook("a", f"{receiver.url}/a"))
    run_id = runs(timer)["a"].pk

    results = run_in_threads(*[lambda: run_execute(run_id=run_id)] * 8, start_together=True)

    assert sorted(results) == [False] * 7 + [True]
    assert len(receiver.at("/a")) == 1
    assert runs(timer)["a"].attempts == 1


@pytest.mark.django_db(transaction=True)
def test_runs_of_one_timer_finishing_at_the_same_moment_still_settle_it(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    names = [f"a{i}" for i in range(6)]
    timer = fire_timer(*(webhook(name, f"{receiver.url}/{name}") for name in names), concurrency=6)
    run_ids = [r.pk for r in runs(timer).values()]

    run_in_threads(*[partial(run_execute, run_id=run_id) for run_id in run_ids], start_together=True)

    timer.refresh_from_db()
    assert timer.status == TimerStatus.SETTLED
    assert len(events(timer, "settled")) == 1
