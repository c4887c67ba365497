"""Closing attempt rows (``actions.queries.attempts_close``), on every supported database.

Postgres closes them with one ``UPDATE ... FROM (VALUES ...)``, SQLite with a read and a
``bulk_update``: both must store every field of each outcome, and leave alone an attempt that
is already closed (a worker that lost its lease reports after the next claim closed its
attempt as lost).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from actions import transitions
from actions.execution import run_execute
from actions.models import ActionAttempt, ActionRun, AttemptOutcome, RunStatus
from actions.queries import AttemptRecord, attempts_close
from actions.runners import RUNNERS, ActionContext, ActionResult, Runner
from tests.actions.conftest import FireTimer
from tests.actions.support import NoParams
from tests.factories import make_run, make_timer
from timers.models import Tenant, TimerStatus

pytestmark = pytest.mark.django_db

CLOSED_FIELDS = ("finished_at", "outcome", "http_status", "exit_code", "duration_ms", "error", "output_excerpt")


def open_attempts(tenant: Tenant, count: int) -> list[ActionAttempt]:
    timer = make_timer(tenant=tenant, status=TimerStatus.FIRED)
    now = timezone.now()
    return [
        ActionAttempt.objects.create(
            run=make_run(timer=timer, action_id=f"a{i}", status=RunStatus.RUNNING), number=1, started_at=now
        )
        for i in range(count)
    ]


def stored(attempt: ActionAttempt) -> tuple[Any, ...]:
    attempt.refresh_from_db()
    return tuple(getattr(attempt, name) for name in CLOSED_FIELDS)


def test_each_outcome_is_stored_with_all_its_fields(tenant: Tenant) -> None:
    ok, transient, permanent = open_attempts(tenant, 3)
    at = timezone.now()
    records = [
        AttemptRecord(ok.pk, AttemptOutcome.SUCCEEDED, 200, None, 12, "", "HTTP 200 ok"),
        AttemptRecord(transient.pk, AttemptOutcome.TRANSIENT, 503, None, 1500, "HTTP 503", ""),
        AttemptRecord(permanent.pk, AttemptOutcome.PERMANENT, None, 2, 0, "exit code 2", "no such file\n"),
    ]

    attempts_close(records, at=at)

    assert stored(ok) == (at, AttemptOutcome.SUCCEEDED, 200, None, 12, "", "HTTP 200 ok")
    assert stored(transient) == (at, AttemptOutcome.TRANSIENT, 503, None, 1500, "HTTP 503", "")
    assert stored(permanent) == (at, AttemptOutcome.PERMANENT, None, 2, 0, "exit code 2", "no such file\n")


def test_an_attempt_already_closed_is_left_alone_and_the_open_ones_are_closed(tenant: Tenant) -> None:
    lost, still_open = open_attempts(tenant, 2)
    lost_at = timezone.now() - timedelta(seconds=5)
    ActionAttempt.objects.filter(pk=lost.pk).update(
        finished_at=lost_at, outcome=AttemptOutcome.TRANSIENT, error=transitions.WORKER_LOST
    )
    before = stored(lost)
    at = timezone.now()

    attempts_close(
        [
            AttemptRecord(lost.pk, AttemptOutcome.SUCCEEDED, 200, None, 40, "", "late"),
            AttemptRecord(still_open.pk, AttemptOutcome.SUCCEEDED, 204, None, 3, "", ""),
        ],
        at=at,
    )

    assert stored(lost) == before
    assert before[:2] == (lost_at, AttemptOutcome.TRANSIENT)
    assert stored(still_open) == (at, AttemptOutcome.SUCCEEDED, 204, None, 3, "", "")


def test_the_late_outcome_of_a_run_taken_over_keeps_its_attempt_recorded_as_lost(
    fire_timer: FireTimer, monkeypatch: pytest.MonkeyPatch
) -> None:
    class TakenOverRunner(Runner[NoParams]):
        """While its attempt runs, the lease expires and another worker claims the run."""

        kind = "taken_over"

        def parse(self, parameters: dict[str, Any], *, tenant_id: str) -> NoParams:
            return NoParams()

        def attempt(self, params: NoParams, context: ActionContext) -> ActionResult:
            run = ActionRun.objects.get(action_id="a")
            ActionRun.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
            assert [c.number for c in transitions.runs_claim(run_ids=[run.pk])] == [2]
            return ActionResult(summary="finished late")

    monkeypatch.setitem(RUNNERS, TakenOverRunner.kind, TakenOverRunner())
    timer = fire_timer({"id": "a", "kind": "taken_over", "parameters": {}})
    run = ActionRun.objects.get(timer=timer)

    assert run_execute(run_id=run.pk) is True

    first, second = ActionAttempt.objects.filter(run=run).order_by("number")
    assert (first.outcome, first.error) == (AttemptOutcome.TRANSIENT, transitions.WORKER_LOST)
    assert second.finished_at is None  # the new owner's attempt, untouched
    run.refresh_from_db()
    assert (run.status, run.attempts) == (RunStatus.RUNNING, 2)
