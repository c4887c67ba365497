"""Where a bucket's tick is, and the reconciler noticing one that is gone (no worker here).

A marker per bucket says the tick was published (``p:``) or which worker connection holds it
(``h:``, with a heartbeat in the cache); these tests call the steps directly and stand in for
the worker's consumer with a plain object.
"""

from __future__ import annotations

import gc
import time
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.core.cache import cache
from django.utils import timezone
from kombu.exceptions import OperationalError

from tests.broker import QueuedTask, queued_tasks
from tests.factories import schedule_timer
from timers import engine, tick_wire, ticks
from timers.models import Tenant, Timer

pytestmark = pytest.mark.django_db(transaction=True)


class Killed(BaseException):
    """The process dies here (SIGKILL): nothing after this line runs, no handler sees it."""


class FakeConnection:
    pass


class FakeConsumer:
    """What ``ticks.tick_held`` reads of Celery's consumer: its current broker connection."""

    def __init__(self) -> None:
        self.connection: FakeConnection | None = FakeConnection()


def queued_ticks(broker: redis.Redis) -> list[QueuedTask]:
    return queued_tasks(broker, "timers", task="timers.fire_due")


def ticks_of(broker: redis.Redis, timer: Timer) -> list[QueuedTask]:
    return [t for t in queued_ticks(broker) if t.kwargs == {"bucket": ticks.bucket_of(timer.fire_at)}]


def no_wire() -> bool:
    """For ``tick_wire.usable``: ticks go through the cache and Celery, as with a cache that is
    not the broker's Redis."""
    return False


def holder_heartbeat_stops(holder: str) -> None:
    """Stand for HOLDER_TTL_SECONDS passing without a beat: the key expires."""
    cache.delete(f"tickholder:{holder}")


def test_ticks_of_many_buckets_are_each_queued_with_their_bucket_and_eta_in_one_publish_batch(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through Celery (where tick_wire cannot write them), ensure_ticks hands every bucket's tick to one kombu publish batch (Redis pipelines the
    LPUSHes: one round trip, not one per tick); each still arrives as its own fire_due task with
    its bucket and its bucket's first instant as ETA, and a bucket already past goes at once."""
    from kombu import messaging

    batches: list[int] = []
    real_batch = messaging.Producer.batch  # type: ignore[attr-defined]  # kombu 5.7; its stubs predate it

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        batches.append(1)
        return real_batch(self, *args, **kwargs)

    monkeypatch.setattr(messaging.Producer, "batch", counted)
    monkeypatch.setattr(tick_wire, "usable", no_wire)
    now = timezone.now()
    fire_ats = [now + timedelta(seconds=30, milliseconds=10 * i) for i in range(40)]
    past = now - timedelta(seconds=1)

    assert ticks.ensure_ticks([*fire_ats, past]) == 41

    assert batches == [1]
    queued = {t.kwargs["bucket"]: t.eta for t in queued_ticks(broker)}
    expected = {ticks.bucket_of(f): ticks.tick_eta(ticks.bucket_of(f)) for f in fire_ats}
    assert queued == {**expected, ticks.bucket_of(past): None}


def test_ticks_whose_publish_batch_failed_are_published_one_by_one(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed flush (Redis gone for a moment) does not leave the batch's buckets to the next
    reconcile pass: each tick goes again on its own, with Celery's publish retry."""

    def flush_fails(*_: Any, **__: Any) -> None:
        raise OperationalError("Error 111 connecting to redis: Connection refused.")

    monkeypatch.setattr(ticks, "publish_each", flush_fails)
    monkeypatch.setattr(tick_wire, "usable", no_wire)
    fire_ats = [timezone.now() + timedelta(seconds=30, milliseconds=10 * i) for i in range(5)]

    assert ticks.ensure_ticks(fire_ats) == 5

    assert sorted(t.kwargs["bucket"] for t in queued_ticks(broker)) == [ticks.bucket_of(f) for f in fire_ats]


def test_a_tick_the_broker_refused_after_its_marker_was_set_is_republished_by_the_next_reconcile(
    tenant: Tenant, broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: Any, **__: Any) -> None:
        raise OperationalError("Error 111 connecting to redis: Connection refused.")

    with monkeypatch.context() as patched:
        patched.setattr(tick_wire, "mark_and_push", refuse)  # Redis gone: neither the script
        patched.setattr(ticks, "publish", refuse)  # nor Celery's publish gets through
        timer = schedule_timer(tenant=tenant, in_=timedelta(seconds=30))  # logged, not raised
    assert ticks_of(broker, timer) == []

    report = engine.reconcile()

    assert report.ticks_republished == 1
    assert [t.eta for t in ticks_of(broker, timer)] == [ticks.tick_eta(ticks.bucket_of(timer.fire_at))]


def test_a_publisher_killed_between_marking_and_publishing_leaves_a_tick_the_next_interval_republishes(
    tenant: Tenant, broker: redis.Redis, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.MINOOTS_RECONCILE_INTERVAL = timedelta(seconds=5)
    timer = schedule_timer(tenant=tenant, in_=timedelta(seconds=8))
    # Start over from a bucket with neither marker nor tick, then die in the middle of ensure_tick.
    cache.clear()
    broker.delete("timers")
    created = timezone.now()

    def die(*_: Any, **__: Any) -> None:
        raise Killed

    with monkeypatch.context() as patched:
        # Where tick_wire writes the marker and the tick in one script this cannot happen; the
        # path through the cache and Celery marks first.
        patched.setattr(tick_wire, "usable", no_wire)
        patched.setattr(ticks, "publish", die)
        with pytest.raises(Killed):
            ticks.ensure_tick(timer.fire_at)
    assert queued_ticks(broker) == []

    # Within the interval the marker may still be a tick on its way to a worker: left alone.
    assert engine.reconcile(now=created + timedelta(seconds=1)).ticks_republished == 0
    # One interval later no worker took it: it never left, and is published once.
    later = created + timedelta(seconds=6)
    assert engine.reconcile(now=later).ticks_republished == 1
    assert [t.eta for t in ticks_of(broker, timer)] == [ticks.tick_eta(ticks.bucket_of(timer.fire_at))]
    assert engine.reconcile(now=later).ticks_republished == 0


def test_ticks_held_by_a_worker_that_died_are_republished_and_those_of_a_live_worker_are_not(
    tenant: Tenant, broker: redis.Redis
) -> None:
    doomed_timer = schedule_timer(tenant=tenant, in_=timedelta(seconds=20), name="doomed")
    live_timer = schedule_timer(tenant=tenant, in_=timedelta(seconds=25), name="live")
    broker.delete("timers")  # both ticks are now in the workers' hands
    doomed, live = FakeConsumer(), FakeConsumer()
    ticks.tick_held(bucket=ticks.bucket_of(doomed_timer.fire_at), consumer=doomed)
    ticks.tick_held(bucket=ticks.bucket_of(live_timer.fire_at), consumer=live)
    assert engine.reconcile().ticks_republished == 0  # both holders beat

    assert doomed.connection is not None
    holder = getattr(doomed.connection, "_minoots_tick_holder")
    del doomed  # SIGKILL: the process and its heartbeat are gone
    gc.collect()
    holder_heartbeat_stops(holder)

    assert engine.reconcile().ticks_republished == 1
    assert [t.eta for t in queued_ticks(broker)] == [ticks.tick_eta(ticks.bucket_of(doomed_timer.fire_at))]
    assert engine.reconcile().ticks_republished == 0  # published again, not yet taken: left alone


def test_ticks_a_worker_held_on_a_connection_it_lost_are_republished(tenant: Tenant, broker: redis.Redis) -> None:
    timer = schedule_timer(tenant=tenant, in_=timedelta(seconds=20))
    broker.delete("timers")
    consumer = FakeConsumer()
    ticks.tick_held(bucket=ticks.bucket_of(timer.fire_at), consumer=consumer)
    assert consumer.connection is not None
    holder = getattr(consumer.connection, "_minoots_tick_holder")

    # Celery drops the ETA tasks of a closed connection; the reconnected consumer beats for its
    # new connection only (a beat already under way for the old one ends within a period).
    consumer.connection = FakeConnection()
    time.sleep(ticks.HOLDER_HEARTBEAT_SECONDS * 1.5)
    holder_heartbeat_stops(holder)

    assert engine.reconcile().ticks_republished == 1
    assert [t.eta for t in queued_ticks(broker)] == [ticks.tick_eta(ticks.bucket_of(timer.fire_at))]
