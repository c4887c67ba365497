"""Cancelling a fired timer: what has not started is cancelled (pending retries, runs waiting
for a slot, escalations), attempts already running finish and are recorded, the timer ends
``cancelled`` (issue 13 item 4)."""

from __future__ import annotations

from typing import Any

import pytest

from actions.errors import ActionError
from actions.models import ActionAttempt, ActionRun, AttemptOutcome, RunStatus
from actions.runners import RUNNERS, ActionContext, ActionResult, Runner
from tests.actions.conftest import FireTimer
from tests.actions.support import NoParams, drive, execute_next
from timers import services
from timers.models import Timer, TimerEvent, TimerStatus

pytestmark = pytest.mark.django_db


class Busy(Runner[NoParams]):
    kind = "busy_for_cancel"

    def parse(self, parameters: dict[str, Any], *, tenant_id: str) -> NoParams:
        return NoParams()

    def attempt(self, params: NoParams, context: ActionContext) -> ActionResult:
        raise ActionError("busy, try later", permanent=False)


class CancelsItsTimer(Busy):
    """While its attempt runs, someone cancels the timer; then the attempt fails transiently."""

    kind = "cancels_its_timer"

    def attempt(self, params: NoParams, context: ActionContext) -> ActionResult:
        timer = Timer.objects.get(pk=context.timer_id)
        services.timer_cancel(timer=timer, reason="build failed", by="ci")
        raise ActionError("upstream 503", permanent=False)


@pytest.fixture(autouse=True)
def runners(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RUNNERS, Busy.kind, Busy())
    monkeypatch.setitem(RUNNERS, CancelsItsTimer.kind, CancelsItsTimer())


def test_cancelling_a_fired_timer_cancels_its_pending_retry_and_ends_it_cancelled(fire_timer: FireTimer) -> None:
    timer = fire_timer({"id": "a", "kind": Busy.kind, "parameters": {}})
    run = execute_next(timer)
    assert run is not None and run.status == RunStatus.PENDING  # a retry is due later

    cancelled = services.timer_cancel(timer=timer, reason="not needed", by="apikey:x")

    assert cancelled.status == TimerStatus.CANCELLED
    assert cancelled.cancelled_by == "apikey:x" and cancelled.cancel_reason == "not needed"
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.next_attempt_at is None
    assert drive(timer).status == TimerStatus.CANCELLED  # nothing left to execute
    assert ActionAttempt.objects.filter(run=run).count() == 1
    event = TimerEvent.objects.get(timer=timer, kind="cancelled")
    assert event.data == {"reason": "not needed", "by": "apikey:x", "afterFired": True}


def test_an_attempt_running_when_its_timer_is_cancelled_is_recorded_and_nothing_follows_it(
    fire_timer: FireTimer,
) -> None:
    escalation = {"afterAttempts": 1, "escalatesTo": {"id": "page", "kind": Busy.kind, "parameters": {}}}
    timer = fire_timer(
        {"id": "first", "kind": CancelsItsTimer.kind, "parameters": {}, "escalation": escalation},
        {"id": "second", "kind": Busy.kind, "parameters": {}},
        concurrency=1,
    )

    run = execute_next(timer)

    assert run is not None and run.status == RunStatus.CANCELLED
    assert "not retried: the timer was cancelled" in run.last_error
    [attempt] = ActionAttempt.objects.filter(run=run)
    assert attempt.outcome == AttemptOutcome.TRANSIENT and attempt.finished_at is not None
    # The run waiting for the concurrency slot never starts, and no escalation is made.
    assert ActionRun.objects.get(timer=timer, action_id="second").status == RunStatus.CANCELLED
    assert not ActionRun.objects.filter(timer=timer, action_id="page").exists()
    assert drive(timer).status == TimerStatus.CANCELLED
    assert TimerEvent.objects.filter(timer=timer, kind="action.cancelled").count() == 1


def test_cancelling_a_settled_timer_returns_it_unchanged(fire_timer: FireTimer) -> None:
    timer = fire_timer()
    assert timer.status == TimerStatus.SETTLED
    assert services.timer_cancel(timer=timer, reason="late").status == TimerStatus.SETTLED
