"""Ticks written onto the Redis queue by ``timers.tick_wire`` instead of Celery's ``send_task``.

The end-to-end tests (tests/ops) have real firing workers run these ticks; here: the message is
the one Celery sends, the marker and the tick cost one Redis command, and a failure on the way
falls back to Celery without losing or doubling a tick.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from celery import current_app
from django.core.cache import cache
from django.utils import timezone

from minoots_project import tracing
from tests.broker import queued_tasks
from timers import publishing, tick_wire, ticks


def _comparable(raw: bytes | str) -> dict[str, Any]:
    """A queued message with what differs between any two messages (their ids) taken out."""
    message = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    for name in ("id", "root_id"):
        assert message["headers"].pop(name)
    for name in ("correlation_id", "delivery_tag"):
        assert message["properties"].pop(name)
    return message


@pytest.fixture
def traced() -> Iterator[str]:
    token = tracing.set_trace_id("trace-wire-1")
    try:
        yield "trace-wire-1"
    finally:
        tracing.reset_trace_id(token)


@pytest.mark.parametrize("registered", [True, False], ids=["task-registered", "task-unknown-here"])
def test_the_tick_written_here_is_the_message_celery_sends(
    broker: redis.Redis, traced: str, registered: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Field by field (ids apart) what send_task LPUSHes for the same tick, trace id included,
    in a worker (the task registered: its time limits travel along) and in a web process that
    never imported it. A Celery or kombu upgrade that changes its message fails here."""
    import timers.tasks  # noqa: F401  (declares fire_due)

    assert current_app.tasks[publishing.FIRE_DUE].time_limit == 360  # finalized: registered
    if not registered:
        monkeypatch.delitem(current_app._tasks, publishing.FIRE_DUE)  # type: ignore[attr-defined]
    assert tick_wire.usable()
    eta = timezone.now() + timedelta(seconds=30)
    for at in (eta, None):
        broker.delete("timers")
        publishing.publish(publishing.FIRE_DUE, kwargs={"bucket": 12345}, eta=at)
        broker.lpush("timers", tick_wire.tick_message(12345, at))
        written_here, from_celery = broker.lrange("timers", 0, -1)  # newest first

        assert _comparable(written_here) == _comparable(from_celery)
        assert json.loads(written_here)["headers"]["trace_id"] == traced


class _ParentRequest:
    called_directly = False
    id = "parent-task-id"
    root_id = "root-task-id"
    delivery_info: dict[str, Any] = {}


class _ParentTask:
    """What Celery reads of the task a worker is running when that task publishes another."""

    request = _ParentRequest()

    def add_trail(self, result: Any) -> Any:
        return result


def test_a_tick_written_from_inside_a_task_links_to_it_as_celerys_does(broker: redis.Redis) -> None:
    """Published by a running task (the reconciler, a fire that arms): root and parent ids as
    send_task sets them, the rest as above."""
    from celery._state import _task_stack  # type: ignore[attr-defined]  # not in celery's stubs

    _task_stack.push(_ParentTask())
    try:
        publishing.publish(publishing.FIRE_DUE, kwargs={"bucket": 7}, eta=None)
        broker.lpush("timers", tick_wire.tick_message(7, None))
    finally:
        _task_stack.pop()
    messages = [json.loads(raw) for raw in broker.lrange("timers", 0, -1)]

    assert [(m["headers"]["root_id"], m["headers"]["parent_id"]) for m in messages] == [
        ("root-task-id", "parent-task-id")
    ] * 2
    written_here, from_celery = broker.lrange("timers", 0, -1)
    assert _comparable(written_here) == _comparable(from_celery)


def test_a_create_marks_its_bucket_and_pushes_its_tick_in_one_redis_command(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One round trip for the marker and the tick (it used to be a SET NX, then the publish);
    a second timer of the bucket pushes nothing, and the marker is the one the rest of the
    tick protocol reads (a ``p:`` marker)."""
    commands: list[str] = []
    real = redis.Redis.execute_command

    def counted(self: redis.Redis, *args: Any, **options: Any) -> Any:
        commands.append(" ".join(map(str, args[:2])))
        return real(self, *args, **options)

    broker.script_load(tick_wire._MARK_AND_PUSH)  # a fresh Redis: redis-py would load it first
    monkeypatch.setattr(redis.Redis, "execute_command", counted)
    fire_at = timezone.now() + timedelta(seconds=30)

    assert ticks.ensure_tick(fire_at) is True
    assert len(commands) == 1, commands
    assert ticks.ensure_tick(fire_at + timedelta(microseconds=1)) is False

    assert len(commands) == 2, commands
    monkeypatch.setattr(redis.Redis, "execute_command", real)
    bucket = ticks.bucket_of(fire_at)
    queued = queued_tasks(broker, "timers", task=publishing.FIRE_DUE)
    assert [(t.kwargs, t.eta) for t in queued] == [({"bucket": bucket}, ticks.tick_eta(bucket))]
    assert str(cache.get(f"tick:{bucket}")).startswith("p:")


def test_a_batch_pushes_the_ticks_of_its_new_buckets_only_in_one_script(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bucket already marked gets no tick built nor pushed (one MGET first), the others'
    ticks all go in one script call."""
    now = timezone.now()
    already = now + timedelta(seconds=30)
    assert ticks.ensure_tick(already)
    fire_ats = [already, *(now + timedelta(seconds=31, milliseconds=10 * i) for i in range(20))]
    scripts: list[int] = []
    real = tick_wire.mark_and_push

    def counted(*args: Any, **kwargs: Any) -> list[int]:
        scripts.append(len(kwargs["ticks"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(tick_wire, "mark_and_push", counted)

    assert ticks.ensure_ticks(fire_ats) == 20

    assert scripts == [20]
    buckets = sorted(t.kwargs["bucket"] for t in queued_tasks(broker, "timers", task=publishing.FIRE_DUE))
    assert buckets == sorted(ticks.bucket_of(f) for f in fire_ats)


def test_a_script_that_could_not_run_leaves_the_tick_to_celery(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*_: Any, **__: Any) -> list[int]:
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tick_wire, "mark_and_push", refused)
    fire_at = timezone.now() + timedelta(seconds=30)

    assert ticks.ensure_tick(fire_at) is True

    queued = queued_tasks(broker, "timers", task=publishing.FIRE_DUE)
    assert [t.kwargs for t in queued] == [{"bucket": ticks.bucket_of(fire_at)}]


def test_a_script_whose_reply_was_lost_is_not_followed_by_a_second_tick(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It ran whole on the server (marker set, tick pushed) but the answer never came back: the
    fallback through the cache and Celery finds the marker and publishes nothing more."""
    real = tick_wire.mark_and_push

    def ran_then_lost(*args: Any, **kwargs: Any) -> list[int]:
        real(*args, **kwargs)
        raise redis.TimeoutError("Timeout reading from 127.0.0.1:6379")

    monkeypatch.setattr(tick_wire, "mark_and_push", ran_then_lost)
    now = timezone.now()
    single = now + timedelta(seconds=30)
    many = [now + timedelta(seconds=40, milliseconds=10 * i) for i in range(5)]

    ticks.ensure_tick(single)
    ticks.ensure_ticks(many)

    buckets = sorted(t.kwargs["bucket"] for t in queued_tasks(broker, "timers", task=publishing.FIRE_DUE))
    assert buckets == sorted(ticks.bucket_of(f) for f in [single, *many])


def test_ticks_go_through_celery_where_the_cache_is_not_the_brokers_redis(settings: Any) -> None:
    assert tick_wire.usable()
    # Django's setting_changed handler drops the cache connections: the next use builds this one.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

    assert not tick_wire.usable()


def test_a_redis_that_refuses_scripts_sends_ticks_through_celery_from_then_on(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ACL without scripting: the first create learns it and every later one goes straight
    through Celery, without a refused round trip and a warning each."""
    calls: list[int] = []

    def noperm(*_: Any, **__: Any) -> list[int]:
        calls.append(1)
        raise redis.ResponseError("NOPERM this user has no permissions to run the 'evalsha' command")

    monkeypatch.setattr(tick_wire, "mark_and_push", noperm)
    monkeypatch.setattr(tick_wire, "_refused", None)
    now = timezone.now()

    assert ticks.ensure_tick(now + timedelta(seconds=30)) is True
    assert ticks.ensure_tick(now + timedelta(seconds=31)) is True

    assert calls == [1]
    assert not tick_wire.usable()
    assert len(queued_tasks(broker, "timers", task=publishing.FIRE_DUE)) == 2
