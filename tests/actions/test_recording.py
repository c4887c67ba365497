"""Recording what an attempt returned: hostile output is stored (escaped, marked), and a
failure while recording one run touches no other run of its batch (issue 9 item 1)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import DataError

from actions import transitions
from actions.batch import runs_execute_batch
from actions.models import ActionRun, AttemptOutcome, RunStatus
from actions.recording import ALTERED, storable
from actions.runners import RUNNERS, ActionContext, ActionResult, Runner
from tests.actions.conftest import FireTimer
from tests.actions.support import NoParams, Receiver, Reply, drive, webhook
from tests.factories import make_timer
from timers import services
from timers.models import Tenant, TimerEvent, TimerStatus

pytestmark = pytest.mark.django_db


class Answers(Runner[NoParams]):
    """Succeeds with a fixed output; counts its attempts per timer."""

    kind = "answers"

    def __init__(self, output: str) -> None:
        self.output = output
        self.attempts: dict[str, int] = {}

    def parse(self, parameters: dict[str, Any], *, tenant_id: str) -> NoParams:
        return NoParams()

    def attempt(self, params: NoParams, context: ActionContext) -> ActionResult:
        self.attempts[context.timer_id] = self.attempts.get(context.timer_id, 0) + 1
        return ActionResult(summary=f"said {self.output}", output=self.output)


def test_unstorable_characters_are_kept_as_escapes() -> None:
    assert storable("x\x00y") == ("x\\x00y", True)
    assert storable("bad \udcff byte") == ("bad \\xff byte", True)  # surrogateescape of b"\xff"
    assert storable("lone \ud800") == ("lone \\ud800", True)
    assert storable("plain é ✓") == ("plain é ✓", False)


def test_a_command_printing_nul_and_invalid_utf8_is_recorded_escaped_and_marked(
    settings: Any, fire_timer: FireTimer
) -> None:
    settings.MINOOTS_COMMAND_ALLOWLIST = ["/bin/sh"]
    argv = ["/bin/sh", "-c", "printf 'x\\000y\\377z'"]
    timer = drive(fire_timer({"id": "nul", "kind": "command", "parameters": {"argv": argv}}))

    run = ActionRun.objects.get(timer=timer)
    attempt = run.attempt_records.get()
    assert run.status == RunStatus.SUCCEEDED and timer.status == TimerStatus.SETTLED
    assert attempt.outcome == AttemptOutcome.SUCCEEDED
    assert attempt.output_excerpt == f"{ALTERED}\nx\\x00y\\xffz"


def test_a_webhook_answering_a_binary_body_with_nul_is_recorded_escaped_and_marked(
    allow_private: None, receiver: Receiver, fire_timer: FireTimer
) -> None:
    receiver.script("/bin", Reply(body=b"\x1f\x8b\x08\x00bin\x00ary\xff", headers={"Content-Type": "application/gzip"}))
    timer = drive(fire_timer(webhook("hook", f"{receiver.url}/bin")))

    run = ActionRun.objects.get(timer=timer)
    assert run.status == RunStatus.SUCCEEDED and timer.status == TimerStatus.SETTLED
    excerpt = run.attempt_records.get().output_excerpt
    assert excerpt == f"{ALTERED}\n\x1f\\x8b\x08\\x00bin\\x00ary\\xff"


def test_an_unstorable_summary_and_error_are_stored_in_the_events_too(
    monkeypatch: pytest.MonkeyPatch, fire_timer: FireTimer
) -> None:
    monkeypatch.setitem(RUNNERS, Answers.kind, Answers("a\x00b"))
    timer = drive(fire_timer({"id": "a", "kind": "answers", "parameters": {}}))

    assert timer.status == TimerStatus.SETTLED
    succeeded = TimerEvent.objects.get(timer=timer, kind="action.succeeded")
    assert succeeded.data["summary"].startswith("said a\\x00b ")
    assert ALTERED in ActionRun.objects.get(timer=timer).result_summary


def test_a_run_whose_outcome_cannot_be_recorded_leaves_the_other_runs_of_its_batch_recorded(
    monkeypatch: pytest.MonkeyPatch, tenant: Tenant, other_tenant: Tenant
) -> None:
    runner = Answers("ok")
    monkeypatch.setitem(RUNNERS, Answers.kind, runner)
    poisoned = make_timer(tenant=tenant, actions=[{"id": "a", "kind": "answers", "parameters": {}}])
    healthy = make_timer(tenant=other_tenant, actions=[{"id": "a", "kind": "answers", "parameters": {}}])
    services.timers_fire(limit=10)
    poisoned_run, healthy_run = (ActionRun.objects.get(timer=t) for t in (poisoned, healthy))

    real_record = transitions.attempt_record

    # Every path builds an attempt's record here (the batch's successes on Postgres are stored
    # by the statement that moves their runs).
    def record(finished: Any) -> Any:
        if finished.claim.run.pk == poisoned_run.pk:
            raise DataError("a value this database cannot store")
        return real_record(finished)

    monkeypatch.setattr(transitions, "attempt_record", record)
    assert runs_execute_batch(run_ids=[poisoned_run.pk, healthy_run.pk]) == 2

    healthy_run.refresh_from_db()
    healthy.refresh_from_db()
    assert healthy_run.status == RunStatus.SUCCEEDED and healthy.status == TimerStatus.SETTLED
    assert [a.outcome for a in healthy_run.attempt_records.all()] == [AttemptOutcome.SUCCEEDED]
    assert runner.attempts[str(healthy.pk)] == 1
    poisoned_run.refresh_from_db()
    assert poisoned_run.status == RunStatus.RUNNING  # left to lease recovery, nobody else's
