"""No retry storms: a floor under every backoff, and a budget of attempts per timer,
escalations included (issue 9 item 7)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from actions.bundle import RetryPolicy
from actions.errors import ActionError
from actions.execution import retry_delay
from actions.models import ActionAttempt, ActionRun, RunStatus
from actions.runners import RUNNERS, ActionContext, ActionResult, Runner
from tests.actions.conftest import FireTimer
from tests.actions.support import NoParams, drive, execute_next
from timers.models import TimerEvent, TimerStatus

pytestmark = pytest.mark.django_db


class AlwaysBusy(Runner[NoParams]):
    """Every attempt is a transient failure."""

    kind = "always_busy"

    def parse(self, parameters: dict[str, Any], *, tenant_id: str) -> NoParams:
        return NoParams()

    def attempt(self, params: NoParams, context: ActionContext) -> ActionResult:
        raise ActionError("busy, try later", permanent=False)


@pytest.fixture
def always_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RUNNERS, AlwaysBusy.kind, AlwaysBusy())


def busy(action_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": action_id, "kind": AlwaysBusy.kind, "parameters": {}, **extra}


def test_a_zero_backoff_still_waits_the_minimum(settings: Any) -> None:
    zero = RetryPolicy(max_attempts=100, backoff_initial_ms=0, backoff_multiplier=1)
    assert all(retry_delay(zero, failed_attempt=n) >= timedelta(seconds=1) for n in range(1, 20))
    settings.MINOOTS_MIN_BACKOFF = timedelta(seconds=5)
    assert retry_delay(zero, failed_attempt=1) >= timedelta(seconds=5)


def test_a_retry_after_a_zero_backoff_is_scheduled_no_sooner_than_the_minimum(
    always_busy: None, fire_timer: FireTimer
) -> None:
    timer = fire_timer(busy("a"), retry={"maxAttempts": 100, "backoffInitialMs": 0, "backoffMultiplier": 1})
    run = execute_next(timer)
    assert run is not None and run.status == RunStatus.PENDING and run.next_attempt_at is not None
    attempt = ActionAttempt.objects.get(run=run)
    assert attempt.finished_at is not None
    assert run.next_attempt_at - attempt.finished_at >= timedelta(seconds=1)


def test_a_timers_actions_stop_retrying_once_they_used_the_attempt_budget(
    settings: Any, always_busy: None, fire_timer: FireTimer
) -> None:
    settings.MINOOTS_MAX_ATTEMPTS_PER_TIMER = 6
    escalation = {"afterAttempts": 100, "escalatesTo": busy("page")}
    timer = fire_timer(
        busy("a", escalation=escalation),
        busy("b"),
        busy("c"),
        concurrency=3,
        retry={"maxAttempts": 100, "backoffInitialMs": 0},
    )

    timer = drive(timer, max_steps=30)

    runs = list(ActionRun.objects.filter(timer=timer))
    assert timer.status == TimerStatus.FAILED
    assert {r.action_id for r in runs} == {"a", "b", "c", "page"}  # a failed for good: it escalated
    assert all(r.status == RunStatus.FAILED for r in runs)
    # The budget, plus at most one final attempt per run that was already under way.
    total = sum(r.attempts for r in runs)
    assert 6 <= total <= 6 + len(runs)
    assert any("MINOOTS_MAX_ATTEMPTS_PER_TIMER" in r.last_error for r in runs)
    assert TimerEvent.objects.filter(timer=timer, kind="action.retrying").count() < 6
