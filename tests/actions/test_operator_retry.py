"""An operator retries failed action runs (issue 11 item 3): a new chain of attempts, the timer
back to ``fired`` and settled or failed again, recorded as events; nothing else retried."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from actions.errors import ActionError
from actions.models import ActionRun, RunStatus
from actions.runners import RUNNERS, ActionContext, ActionResult, Runner
from actions.services import run_retry, runs_retry_failed
from actions.transitions import WORKER_LOST
from tests.actions.conftest import FireTimer
from tests.actions.support import NoParams, drive
from timers.models import Tenant, TimerEvent, TimerStatus
from timers.services import Conflict

pytestmark = pytest.mark.django_db


class Flaky(Runner[NoParams]):
    """Fails while ``broken``; then succeeds."""

    kind = "flaky_target"
    broken = True
    calls = 0

    def parse(self, parameters: dict[str, Any], *, tenant_id: str) -> NoParams:
        return NoParams()

    def attempt(self, params: NoParams, context: ActionContext) -> ActionResult:
        type(self).calls += 1
        if type(self).broken:
            raise ActionError("target down", permanent=False)
        return ActionResult(summary="ok")


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> type[Flaky]:
    monkeypatch.setitem(RUNNERS, Flaky.kind, Flaky())
    monkeypatch.setattr(Flaky, "broken", True)
    monkeypatch.setattr(Flaky, "calls", 0)
    return Flaky


def action(action_id: str) -> dict[str, Any]:
    return {"id": action_id, "kind": Flaky.kind, "parameters": {}}


def failed_timer(fire_timer: FireTimer, *ids: str, max_attempts: int = 2) -> Any:
    timer = drive(fire_timer(*(action(i) for i in ids), retry={"maxAttempts": max_attempts}))
    assert timer.status == TimerStatus.FAILED
    return timer


def test_a_retried_run_gets_a_new_chain_and_its_timer_settles(flaky: type[Flaky], fire_timer: FireTimer) -> None:
    timer = failed_timer(fire_timer, "notify")
    run = ActionRun.objects.get(timer=timer)
    assert (run.status, run.attempts) == (RunStatus.FAILED, 2)

    flaky.broken = False
    retried = run_retry(run_id=run.pk, by="admin:ops")

    assert (retried.status, retried.retry_base) == (RunStatus.PENDING, 2)
    timer.refresh_from_db()
    assert (timer.status, timer.failure_reason, timer.settled_at) == (TimerStatus.FIRED, "", None)
    timer = drive(timer)
    assert timer.status == TimerStatus.SETTLED
    run.refresh_from_db()
    assert (run.status, run.attempts) == (RunStatus.SUCCEEDED, 3)
    assert run.attempt_records.count() == 3  # the first chain's attempts are kept
    kinds = list(TimerEvent.objects.filter(timer=timer).order_by("id").values_list("kind", flat=True))
    assert kinds[-3:] == ["retried", "action.succeeded", "settled"]
    event = TimerEvent.objects.get(timer=timer, kind="retried")
    assert event.data == {"runIds": [str(run.pk)], "by": "admin:ops"}


def test_a_new_chain_gets_the_policys_attempts_again_then_the_timer_fails_again(
    flaky: type[Flaky], fire_timer: FireTimer
) -> None:
    timer = failed_timer(fire_timer, "notify", max_attempts=2)
    run = ActionRun.objects.get(timer=timer)
    run_retry(run_id=run.pk, by="admin:ops")
    timer = drive(timer)
    run.refresh_from_db()
    # Two more attempts (maxAttempts 2 per chain), not one: attempts 3 and 4.
    assert (run.status, run.attempts, flaky.calls) == (RunStatus.FAILED, 4, 4)
    assert timer.status == TimerStatus.FAILED
    assert timer.failure_reason == "actions failed: notify"


def test_only_a_failed_run_can_be_retried(flaky: type[Flaky], fire_timer: FireTimer) -> None:
    flaky.broken = False
    timer = drive(fire_timer(action("ok")))
    run = ActionRun.objects.get(timer=timer)
    with pytest.raises(Conflict, match="Action run is succeeded"):
        run_retry(run_id=run.pk, by="admin:ops")
    timer.refresh_from_db()
    assert timer.status == TimerStatus.SETTLED


def test_retrying_everything_failed_since_a_time_reopens_each_timer_once_and_spares_other_tenants(
    flaky: type[Flaky], fire_timer: FireTimer, tenant: Tenant
) -> None:
    first = failed_timer(fire_timer, "a", "b")
    second = failed_timer(fire_timer, "c")
    old = failed_timer(fire_timer, "d")
    ActionRun.objects.filter(timer=old).update(finished_at=timezone.now() - timedelta(days=2))

    flaky.broken = False
    count = runs_retry_failed(since=timezone.now() - timedelta(hours=1), by="ops", tenant_id=tenant.id)

    assert count == 3
    assert TimerEvent.objects.filter(timer=first, kind="retried").count() == 1
    for timer in (first, second):
        assert drive(timer).status == TimerStatus.SETTLED
    old.refresh_from_db()
    assert old.status == TimerStatus.FAILED  # failed before `since`: left alone
    assert runs_retry_failed(since=timezone.now() - timedelta(hours=1), by="ops", tenant_id="globex") == 0


@pytest.mark.django_db(transaction=True)
def test_a_database_failure_mid_attempt_ends_the_runs_lease_so_the_retry_recovers_it_at_once(
    flaky: type[Flaky], fire_timer: FireTimer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10 item 2: the outcome of an attempt could not be recorded (Postgres restarted).
    Before, the run stayed ``running`` under its 5-minute lease and the task's retry, which
    claims only claimable runs, found nothing to do."""
    from django.db import OperationalError

    from actions import execution

    flaky.broken = False
    timer = fire_timer(action("hook"))
    run = ActionRun.objects.get(timer=timer)
    real_conclude = execution.runs_conclude

    def database_gone(*_: Any, **__: Any) -> Any:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(execution, "runs_conclude", database_gone)
    with pytest.raises(OperationalError):
        execution.run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    assert run.lease_expires_at is not None and run.lease_expires_at < timezone.now()

    monkeypatch.setattr(execution, "runs_conclude", real_conclude)
    assert execution.run_execute(run_id=run.pk) is True  # the task's retry
    run.refresh_from_db()
    assert (run.status, run.attempts) == (RunStatus.SUCCEEDED, 2)
    first, second = run.attempt_records.order_by("number")
    # The attempt whose outcome was lost is recorded as such (a transient failure), then retried.
    assert (first.outcome, first.error) == ("transient_failure", WORKER_LOST)
    assert second.outcome == "succeeded"
