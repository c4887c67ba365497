"""The claim and the conclude of a batch of runs as a few set-based statements (actions.queries):
their statement counts do not grow with the batch, a run claimed by one batch is not claimed
by another meanwhile, and what the statements write is what the ORM path wrote."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from actions import execution, transitions
from actions.models import ActionAttempt, ActionRun, AttemptOutcome, RunStatus
from actions.transitions import WORKER_LOST, Finished, Outcome
from tests.actions.support import webhook
from tests.factories import make_timer
from timers import services
from timers.models import Tenant, Timer, TimerEvent, TimerStatus

pytestmark = pytest.mark.django_db


def fired_runs(tenant: Tenant, n: int, *, actions_per_timer: int = 1) -> list[Any]:
    timers = [
        make_timer(
            tenant=tenant,
            name=f"s{i}",
            actions=[webhook(f"hook{a}", f"https://example.com/{i}/{a}") for a in range(actions_per_timer)],
            concurrency=actions_per_timer,
            retry_policy={"maxAttempts": 3, "backoffInitialMs": 10, "backoffMultiplier": 2},
        )
        for i in range(n)
    ]
    services.timers_fire(limit=1000)
    return list(
        ActionRun.objects.filter(timer__in=timers, status=RunStatus.PENDING)
        .order_by("timer", "position")
        .values_list("pk", flat=True)
    )


def succeeded(claims: list[transitions.Claim]) -> list[Finished]:
    return [
        Finished(claim=c, outcome=Outcome(succeeded=True, summary="HTTP 200", http_status=200), seconds=0.01)
        for c in claims
    ]


def statements(run: Any) -> tuple[int, Any]:
    with CaptureQueriesContext(connection) as ctx:
        result = run()
    # BEGIN / COMMIT / SAVEPOINT are bookkeeping, not work.
    work = [
        q
        for q in ctx.captured_queries
        if q["sql"].split(" ", 1)[0].upper() not in ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")
    ]
    return len(work), result


@pytest.mark.postgres_only("the set-based statements are the Postgres path; SQLite keeps the ORM's")
def test_a_batch_is_claimed_and_concluded_in_a_few_statements_whatever_its_size(tenant: Tenant, settings: Any) -> None:
    # No tenant cap: its "does another tenant wait?" read is cached per process for a moment,
    # so whether a claim makes it depends on the clock.
    settings.MINOOTS_TENANT_ACTION_CONCURRENCY = 0
    counts = []
    for n in (3, 60):
        ids = fired_runs(tenant, n)
        claim_statements, claims = statements(lambda: transitions.runs_claim(run_ids=ids))  # noqa: B023
        assert len(claims) == n
        conclude_statements, held = statements(lambda: execution.runs_conclude(succeeded(claims)))  # noqa: B023
        assert len(held) == n
        counts.append((claim_statements, conclude_statements))
    # Claim: the locking read, one statement that moves the runs, closes lost attempts and
    # opens the new ones.
    # Conclude: the timers' lock, one statement moving the runs and writing their events and
    # attempts, one read of where the timers' runs stand, the settle.
    assert counts[0] == counts[1]
    assert counts[0][0] <= 2
    assert counts[0][1] <= 4
    assert Timer.objects.filter(status=TimerStatus.SETTLED).count() == 63


@pytest.mark.postgres_only("row locks with SKIP LOCKED")
@pytest.mark.django_db(transaction=True)
def test_runs_claimed_by_one_batch_are_not_claimed_by_another_meanwhile(tenant: Tenant) -> None:
    ids = fired_runs(tenant, 10)
    first_claimed = threading.Event()
    release = threading.Event()
    mine: list[Any] = []
    theirs: list[Any] = []

    def first() -> None:
        try:
            with transaction.atomic():  # the claim's locks last until this commits
                mine.extend(transitions.runs_claim(run_ids=ids[:6]))
                first_claimed.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert first_claimed.wait(10)
        # Overlapping ids while the first claim is not committed: only the others are taken.
        theirs.extend(transitions.runs_claim(run_ids=ids))
    finally:
        release.set()
        thread.join(10)
    assert sorted(c.run.pk for c in mine) == sorted(ids[:6])
    assert sorted(c.run.pk for c in theirs) == sorted(ids[6:])
    # Once committed, the first claim's runs are running under their lease: still not claimable.
    assert transitions.runs_claim(run_ids=ids) == []
    assert ActionAttempt.objects.filter(run_id__in=ids).count() == 10
    assert set(ActionRun.objects.filter(pk__in=ids).values_list("status", "attempts")) == {(RunStatus.RUNNING, 1)}


def test_a_claimed_batch_holds_one_slot_and_carries_its_runs_and_timers(tenant: Tenant) -> None:
    ids = fired_runs(tenant, 4)

    claims = transitions.runs_claim(run_ids=ids)

    assert [c.run.pk for c in claims] == ids
    runs = {r.pk: r for r in ActionRun.objects.filter(pk__in=ids)}
    for index, claim in enumerate(claims):
        stored = runs[claim.run.pk]
        assert (stored.status, stored.attempts, claim.number) == (RunStatus.RUNNING, 1, 1)
        assert stored.lease_expires_at is not None and stored.lease_expires_at > timezone.now()
        assert (stored.next_attempt_at is None) == (index == 0)  # the first holds the batch's slot
        assert claim.run.timer.pk == stored.timer_id and claim.run.timer.tenant_id == tenant.pk
        assert claim.run.timer.action_bundle == Timer.objects.get(pk=stored.timer_id).action_bundle
        assert claim.run.parameters == stored.parameters
        attempt = ActionAttempt.objects.get(run_id=claim.run.pk, number=1)
        assert claim.attempt_id == attempt.pk
        assert (attempt.run_id, attempt.number, attempt.finished_at, attempt.outcome) == (claim.run.pk, 1, None, "")


def test_a_lease_recovery_claim_closes_the_lost_attempt_and_opens_the_next(tenant: Tenant) -> None:
    ids = fired_runs(tenant, 2)
    transitions.runs_claim(run_ids=ids)
    ActionRun.objects.filter(pk=ids[0]).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    claims = transitions.runs_claim(run_ids=ids)

    assert [(c.run.pk, c.number) for c in claims] == [(ids[0], 2)]
    lost, new = ActionAttempt.objects.filter(run_id=ids[0]).order_by("number")
    assert (lost.number, lost.outcome, lost.error) == (1, AttemptOutcome.TRANSIENT, WORKER_LOST)
    assert lost.finished_at is not None
    assert (new.number, new.finished_at, claims[0].attempt_id) == (2, None, new.pk)
    # The other run's attempt, still in flight, is left alone.
    assert ActionAttempt.objects.get(run_id=ids[1]).finished_at is None


def test_a_batch_of_successes_writes_each_run_its_event_and_settles_each_timer(tenant: Tenant) -> None:
    ids = fired_runs(tenant, 3, actions_per_timer=2)
    claims = transitions.runs_claim(run_ids=ids)

    held = execution.runs_conclude(succeeded(claims))

    assert len(held) == 6
    for run in ActionRun.objects.filter(pk__in=ids):
        assert (run.status, run.result_summary, run.lease_expires_at) == (RunStatus.SUCCEEDED, "HTTP 200", None)
        assert run.finished_at is not None
        attempt = ActionAttempt.objects.get(run=run)
        assert (attempt.outcome, attempt.http_status, attempt.duration_ms, attempt.error) == (
            AttemptOutcome.SUCCEEDED,
            200,
            10,
            "",
        )
        assert attempt.finished_at == run.finished_at
    for timer in Timer.objects.filter(action_runs__in=ids).distinct():
        assert timer.status == TimerStatus.SETTLED
        events = list(
            TimerEvent.objects.filter(timer=timer).order_by("id").values_list("kind", "state_version", "data")
        )
        assert [kind for kind, _, _ in events] == ["fired", "action.succeeded", "action.succeeded", "settled"]
        fired_version = events[0][1]
        assert [version for _, version, _ in events] == [fired_version, fired_version, fired_version, fired_version + 1]
        run_order = list(ActionRun.objects.filter(timer=timer).order_by("position").values_list("pk", "action_id"))
        assert [data["runId"] for _, _, data in events[1:3]] == [str(pk) for pk, _ in run_order]
        assert events[1][2] == {
            "runId": str(run_order[0][0]),
            "actionId": run_order[0][1],
            "attempt": 1,
            "httpStatus": 200,
            "summary": "HTTP 200",
        }


def test_a_success_for_a_run_another_worker_took_over_is_dropped(tenant: Tenant) -> None:
    ids = fired_runs(tenant, 2)
    claims = transitions.runs_claim(run_ids=ids)
    # The first run's lease passed and another worker claimed it again (attempt 2).
    ActionRun.objects.filter(pk=ids[0]).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert [c.number for c in transitions.runs_claim(run_ids=[ids[0]])] == [2]

    held = execution.runs_conclude(succeeded(claims))

    assert [f.claim.run.pk for f in held] == [ids[1]]
    taken_over = ActionRun.objects.get(pk=ids[0])
    assert (taken_over.status, taken_over.attempts) == (RunStatus.RUNNING, 2)
    assert not TimerEvent.objects.filter(timer_id=taken_over.timer_id, kind="action.succeeded").exists()
    assert Timer.objects.get(pk=taken_over.timer_id).status == TimerStatus.FIRED
    assert Timer.objects.get(pk=ActionRun.objects.get(pk=ids[1]).timer_id).status == TimerStatus.SETTLED
