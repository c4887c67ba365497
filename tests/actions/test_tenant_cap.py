"""The per-tenant cap on action worker slots (MINOOTS_TENANT_ACTION_CONCURRENCY; issue 9 item
2): while another tenant has runs waiting, one tenant cannot hold every action slot; a tenant
alone is never held back; the runs it holds back or gives back are not lost."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.core.cache import cache
from django.utils import timezone

from actions import execution, transitions
from actions.batch import runs_execute_batch
from actions.models import ActionAttempt, ActionRun, RunStatus
from actions.runners.webhook import WebhookRunner
from actions.services import runs_recover
from actions.transitions import Finished
from tests.actions.support import Receiver, Reply, drive, webhook
from tests.broker import queued_tasks
from tests.concurrency import run_in_threads
from tests.factories import make_tenant, make_timer
from tests.processes import Processes, wait_for
from timers import services
from timers.models import Tenant, Timer, TimerEvent, TimerStatus


@pytest.fixture(autouse=True)
def fresh_waiting_answers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every claim asks afresh whether another tenant waits (processes remember it briefly)."""
    monkeypatch.setattr(transitions, "WAITING_TTL", 0.0)
    transitions.tenants_waiting_forget()
    yield
    transitions.tenants_waiting_forget()


def one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches take webhooks one by one, as they take commands, files and Slack messages (a
    batch's webhooks are otherwise in flight together, and these tests are about the turns)."""
    monkeypatch.setattr(WebhookRunner, "concurrent", False)


def fired(tenant: Tenant, url: str, count: int, *, prefix: str = "") -> list[Timer]:
    """``count`` due timers of ``tenant`` with one webhook each, fired (their runs pending, due)."""
    timers = [
        make_timer(
            tenant=tenant,
            name=f"{tenant.pk}{prefix}{i}",
            actions=[webhook("hook", f"{url}/{tenant.pk}/{prefix}{i}")],
            retry_policy={"maxAttempts": 3, "backoffInitialMs": 10, "backoffMultiplier": 2},
        )
        for i in range(count)
    ]
    services.timers_fire(limit=1000)
    return timers


def run_ids(timers: list[Timer]) -> list[Any]:
    by_timer = dict(ActionRun.objects.filter(timer__in=timers).values_list("timer_id", "pk"))
    return [by_timer[t.pk] for t in timers]


def running_of(tenant: Tenant) -> int:
    return ActionRun.objects.filter(timer__tenant=tenant, status=RunStatus.RUNNING).count()


def slots_of(tenant: Tenant) -> int:
    """Attempts of ``tenant`` in flight (worker slots), as the cap counts them."""
    return ActionRun.objects.filter(
        timer__tenant=tenant, status=RunStatus.RUNNING, next_attempt_at__isnull=True
    ).count()


def hold_slots(tenant: Tenant, url: str, count: int) -> list[Any]:
    """``count`` runs of ``tenant`` claimed one by one and left running (each holds a slot)."""
    ids = run_ids(fired(tenant, url, count, prefix="slot"))
    for run_id in ids:
        assert len(transitions.runs_claim(run_ids=[run_id])) == 1
    return ids


def finish(ids: list[Any]) -> None:
    """Let the claimed runs ``ids`` end as if their attempts succeeded."""
    ActionRun.objects.filter(pk__in=ids).update(status=RunStatus.SUCCEEDED, lease_expires_at=None)


@pytest.mark.django_db
def test_a_tenant_alone_is_never_held_back_however_many_slots_it_holds(
    tenant: Tenant, receiver: Receiver, allow_private: None, settings: Any
) -> None:
    settings.MINOOTS_TENANT_ACTION_CONCURRENCY = 2
    hold_slots(tenant, receiver.url, 5)
    ids = run_ids(fired(tenant, receiver.url, 3))

    claims = transitions.runs_claim(run_ids=ids)

    assert [c.run.pk for c in claims] == ids  # the cap conserves work: nobody else waits
    assert slots_of(tenant) == 6 and running_of(tenant) == 8


@pytest.mark.django_db
def test_a_batch_holds_one_slot_however_many_runs_it_claimed(
    tenant: Tenant, other_tenant: Tenant, receiver: Receiver, allow_private: None, settings: Any
) -> None:
    settings.MINOOTS_TENANT_ACTION_CONCURRENCY = 2
    first, second, third = (run_ids(fired(tenant, receiver.url, 5, prefix=p)) for p in "xyz")
    fired(other_tenant, receiver.url, 1)  # B waits: the cap applies to A

    assert [c.run.pk for c in transitions.runs_claim(run_ids=first)] == first
    assert [c.run.pk for c in transitions.runs_claim(run_ids=second)] == second
    assert slots_of(tenant) == 2 and running_of(tenant) == 10  # two batches, two slots
    assert transitions.runs_claim(run_ids=third) == []  # a third would be a third slot
    assert ActionRun.objects.filter(pk__in=third, status=RunStatus.PENDING, attempts=0).count() == 5


@pytest.mark.django_db
def test_while_another_tenant_waits_a_batch_counts_as_one_slot_from_its_first_attempt_to_its_last(
    tenant: Tenant,
    other_tenant: Tenant,
    receiver: Receiver,
    allow_private: None,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.MINOOTS_TENANT_ACTION_CONCURRENCY = 2
    one_by_one(monkeypatch)
    a_ids = run_ids(fired(tenant, receiver.url, 4))
    fired(other_tenant, receiver.url, 1)
    seen: list[int] = []
    real_attempt = execution.attempt_run

    def counting_attempt(claim: Any, **kwargs: Any) -> Any:
        seen.append(slots_of(tenant))  # the successes before it are not recorded yet
        return real_attempt(claim, **kwargs)

    monkeypatch.setattr(execution, "attempt_run", counting_attempt)

    assert runs_execute_batch(run_ids=a_ids) == 4
    assert seen == [1, 1, 1, 1]
    assert ActionRun.objects.filter(pk__in=a_ids, status=RunStatus.SUCCEEDED).count() == 4


@pytest.mark.django_db
def test_a_tenant_at_its_cap_waits_while_another_tenant_in_the_same_claim_proceeds_and_nothing_is_lost(
    tenant: Tenant, other_tenant: Tenant, receiver: Receiver, allow_private: None, settings: Any
) -> None:
    settings.MINOOTS_TENANT_ACTION_CONCURRENCY = 2
    holding = hold_slots(tenant, receiver.url, 2)
    a_timers = fired(tenant, receiver.url, 4)
    b_timers = fired(other_tenant, receiver.url, 1)
    a_ids, b_ids = run_ids(a_timers), run_ids(b_timers)
    before = timezone.now()

    claims = transitions.runs_claim(run_ids=a_ids[:2] + b_ids + a_ids[2:])

    assert [c.run.pk for c in claims] == b_ids  # B not held up by A
    assert slots_of(tenant) == 2 and slots_of(other_tenant) == 1
    held = ActionRun.objects.filter(pk__in=a_ids)
    for run in held:
        # Held back: still pending, due again within a second, no attempt, no event.
        assert (run.status, run.attempts) == (RunStatus.PENDING, 0)
        assert run.next_attempt_at is not None
        assert before < run.next_attempt_at <= timezone.now() + timedelta(seconds=1)
    assert not ActionAttempt.objects.filter(run__in=held).exists()
    # A held run is not claimed again before it is due (a duplicate message stays a no-op).
    assert transitions.runs_claim(run_ids=a_ids) == []

    for claim in claims:
        outcome = execution.attempt_run(claim)
        execution.runs_conclude([Finished(claim=claim, outcome=outcome, seconds=0.01)])
    finish(holding)
    for timer in a_timers:
        drive(timer)  # the held runs, once due, now that A's slots are free

    for timer in a_timers + b_timers:
        timer.refresh_from_db()
        assert timer.status == TimerStatus.SETTLED
        run = ActionRun.objects.get(timer=timer)
        assert (run.status, run.attempts) == (RunStatus.SUCCEEDED, 1)
        assert [a.number for a in ActionAttempt.objects.filter(run=run)] == [1]
        kinds = list(TimerEvent.objects.filter(timer=timer).order_by("id").values_list("kind", flat=True))
        assert kinds == ["fired", "action.succeeded", "settled"]
    assert len(receiver.requests) == 5


@pytest.mark.django_db
def test_runs_a_batch_holds_back_are_republished_together_within_a_second_while_other_tenants_run(
    tenant: Tenant, other_tenant: Tenant, receiver: Receiver, allow_private: None, settings: Any, broker: redis.Redis
) -> None:
    settings.MINOOTS_TENANT_ACTION_CONCURRENCY = 2
    hold_slots(tenant, receiver.url, 2)
    a_ids = run_ids(fired(tenant, receiver.url, 5))
    b_ids = run_ids(fired(other_tenant, receiver.url, 1))
    broker.delete("actions")

    ran = runs_execute_batch(run_ids=a_ids + b_ids)

    assert ran == 1 and [r.path for r in receiver.requests] == [f"/{other_tenant.pk}/0"]
    [message] = queued_tasks(broker, "actions")  # one message for the five, not five
    assert (message.task, sorted(message.args[0])) == ("actions.run_actions", sorted(str(pk) for pk in a_ids))
    now = timezone.now()
    assert message.eta is not None and now < message.eta <= now + timedelta(seconds=1)


@pytest.mark.django_db
def test_a_batch_over_the_cap_gives_its_other_runs_back_once_another_tenant_waits(
    tenant: Tenant,
    other_tenant: Tenant,
    receiver: Receiver,
    allow_private: None,
    settings: Any,
    broker: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.MINOOTS_TENANT_ACTION_CONCURRENCY = 2
    one_by_one(monkeypatch)
    holding = hold_slots(tenant, receiver.url, 2)  # A alone so far: its batch gets a third slot
    a_ids = run_ids(fired(tenant, receiver.url, 5))
    b_timer = make_timer(tenant=other_tenant, name="b", actions=[webhook("hook", f"{receiver.url}/b")])
    broker.delete("actions")
    real_attempt = execution.attempt_run

    def b_fires_meanwhile(claim: Any, **kwargs: Any) -> Any:
        services.timers_fire(limit=10)  # B's run is now due and waits for a slot
        return real_attempt(claim, **kwargs)

    monkeypatch.setattr(execution, "attempt_run", b_fires_meanwhile)

    ran = runs_execute_batch(run_ids=a_ids)

    assert ran == 1  # the attempt in flight finishes; the other four wait for a free slot
    assert ActionRun.objects.get(pk=a_ids[0]).status == RunStatus.SUCCEEDED
    given_back = ActionRun.objects.filter(pk__in=a_ids[1:])
    assert {(r.status, r.attempts) for r in given_back} == {(RunStatus.PENDING, 0)}
    assert not ActionAttempt.objects.filter(run__in=given_back).exists()  # never started
    assert slots_of(tenant) == 2
    [message] = queued_tasks(broker, "actions", task="actions.run_actions")
    assert sorted(message.args[0]) == sorted(str(pk) for pk in a_ids[1:])
    assert transitions.runs_claim(run_ids=run_ids([b_timer])) != []  # B gets its slot

    # Given-back runs whose message is lost are recovered like any lost run, and run once.
    broker.delete("actions")
    monkeypatch.setattr(execution, "attempt_run", real_attempt)
    finish(holding)
    ActionRun.objects.filter(pk__in=a_ids[1:]).update(next_attempt_at=timezone.now() - timedelta(minutes=1))
    cache.clear()  # Redis lost the message, and the publish markers with it
    assert runs_recover(timezone.now(), limit=100) == 4
    assert execution.run_execute(run_id=a_ids[1]) is True
    assert runs_execute_batch(run_ids=a_ids[2:]) == 3
    assert ActionRun.objects.filter(pk__in=a_ids, status=RunStatus.SUCCEEDED, attempts=1).count() == 5
    a_paths = sorted(r.path for r in receiver.requests if r.path.startswith(f"/{tenant.pk}/") and "slot" not in r.path)
    assert a_paths == sorted(f"/{tenant.pk}/{i}" for i in range(5))


def claim_and_hold(ids: list[Any]) -> int:
    """Claim ``ids`` (attempts left open, as while they run); return how many were claimed."""
    return len(transitions.runs_claim(run_ids=ids))


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_for_one_tenant_never_exceed_its_cap_while_another_waits(
    receiver: Receiver, allow_private: None, settings: Any
) -> None:
    settings.MINOOTS_TENANT_ACTION_CONCURRENCY = 2
    tenant = make_tenant(id="acme")
    fired(make_tenant(id="other"), receiver.url, 1)
    for round_ in range(5):
        ids = run_ids(fired(tenant, f"{receiver.url}/r{round_}", 8))

        claimed = run_in_threads(*[lambda i=i: claim_and_hold(ids[i : i + 1]) for i in range(8)], start_together=True)

        assert sum(claimed) == 2 and slots_of(tenant) == 2
        ActionRun.objects.filter(timer__tenant=tenant).update(status=RunStatus.SUCCEEDED, lease_expires_at=None)


@pytest.mark.django_db
def test_the_cap_is_on_by_default_and_0_means_no_cap(
    tenant: Tenant, other_tenant: Tenant, receiver: Receiver, allow_private: None, settings: Any
) -> None:
    assert settings.MINOOTS_TENANT_ACTION_CONCURRENCY == 8
    hold_slots(tenant, receiver.url, 8)
    ids = run_ids(fired(tenant, receiver.url, 2))
    fired(other_tenant, receiver.url, 1)
    assert transitions.runs_claim(run_ids=ids[:1]) == []

    settings.MINOOTS_TENANT_ACTION_CONCURRENCY = 0
    ActionRun.objects.filter(pk__in=ids).update(next_attempt_at=timezone.now() - timedelta(seconds=1))

    assert len(transitions.runs_claim(run_ids=ids)) == 2  # one more slot (a batch), not held
    assert slots_of(tenant) == 9 and running_of(tenant) == 10


@pytest.mark.django_db
def test_a_process_remembers_whether_other_tenants_wait_for_a_moment(
    tenant: Tenant, other_tenant: Tenant, receiver: Receiver, allow_private: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transitions, "WAITING_TTL", 60.0)
    assert transitions.tenant_others_waiting(tenant.pk) is False
    fired(other_tenant, receiver.url, 1)
    assert transitions.tenant_others_waiting(tenant.pk) is False  # remembered: no query per claim
    transitions.tenants_waiting_forget()
    assert transitions.tenant_others_waiting(tenant.pk) is True
    assert transitions.tenant_others_waiting(other_tenant.pk) is False  # its own runs do not count


# --- end to end -------------------------------------------------------------------------------

# Sized so the test takes seconds, not ~50 s per database: A's 180 webhooks in 18 batches of 10
# (12 on the threads, 6 queued), 0.25 s each, so each wave of batches takes 2.5 s. Without the
# cap B starts only after the first wave (~126 of A's started); with it, after ~25.
A_RUNS = 180
A_BATCH = 10
SLOW = 0.25  # seconds each of A's webhooks takes


def in_flight(receiver: Receiver, path: str) -> int:
    """Requests to ``path`` the receiver is still answering (its raw replies not yet sent)."""
    return len(receiver.at(path)) - sum(1 for s in list(receiver.sent) if s.path.split("?")[0] == path)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_tenant_b_is_not_starved_by_tenant_a_flooding_the_action_workers_with_the_default_cap(
    receiver: Receiver, processes: Processes, settings: Any
) -> None:
    # 12 action threads taking a batch's webhooks one by one, as they take commands and files
    # (MINOOTS_WEBHOOKS_TOGETHER off; a batch's webhooks are otherwise in flight together, and
    # this test is about the turns). A's 180 slow webhooks (18 batches of 10: 12 batches on the
    # threads, 6 queued), then B's one. Without a cap B's message waits behind A's queued
    # batches, and B's attempt starts only once the first batches have run all their 10
    # attempts (~126 of A's 180 started by then). With the default cap (8) A gives slots back at
    # the next attempt boundary and its queued batches are held back, so B's starts early.
    #
    # The batch size must be set here too: this process fires the timers and so publishes A's
    # batches (MINOOTS_ACTION_BATCH in processes.env reaches only the worker, which re-publishes
    # held-back runs). With only the worker's set, A's runs went out in batches of the default
    # 100: 4 batches, 4 threads, ~45 s of webhooks one by one, and A never held more slots than
    # the cap, so B found a free thread and the test passed with the cap off.
    settings.MINOOTS_ACTION_BATCH = A_BATCH
    processes.env.update(
        {
            "MINOOTS_WEBHOOK_ALLOW_PRIVATE": "true",
            "MINOOTS_WEBHOOKS_TOGETHER": "false",
            "MINOOTS_ACTION_BATCH": str(A_BATCH),
        }
    )
    processes.worker("actions", queues="actions", concurrency=12)
    a, b = make_tenant(id="flood"), make_tenant(id="quiet")
    slow = Reply(raw=[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", b"ok"], interval=SLOW)
    receiver.script("/a", *[slow] * A_RUNS)
    for i in range(A_RUNS):
        make_timer(tenant=a, name=f"a{i}", actions=[webhook("hook", f"{receiver.url}/a")])
    services.timers_fire(limit=1000)
    # Every thread busy with one of A's batches (12 webhooks in flight at once), not just 12
    # webhooks received: fewer, larger batches would leave threads free for B without any cap.
    wait_for(lambda: in_flight(receiver, "/a") >= 12, timeout=30, interval=0.02, what="A's batches to fill the threads")

    make_timer(tenant=b, name="b", actions=[webhook("hook", f"{receiver.url}/b")])
    services.timers_fire(limit=10)
    wait_for(lambda: receiver.at("/b"), timeout=60, interval=0.02, what="B's webhook")

    a_started = len(receiver.at("/a"))
    assert a_started < A_RUNS / 2, f"B's attempt started only after {a_started} of A's {A_RUNS}"
    wait_for(
        lambda: Timer.objects.filter(tenant=a, status=TimerStatus.SETTLED).count() == A_RUNS,
        timeout=90,
        what="A's timers to settle",
    )
    assert ActionRun.objects.filter(timer__tenant=a, status=RunStatus.SUCCEEDED, attempts=1).count() == A_RUNS
    assert ActionAttempt.objects.filter(run__timer__tenant=a).count() == A_RUNS  # no attempt lost or repeated
