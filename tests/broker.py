"""The Celery messages waiting in the test broker, decoded from their bodies."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any, NamedTuple

import redis


class QueuedTask(NamedTuple):
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    eta: datetime | None


def decode_message(raw: bytes | str) -> QueuedTask:
    """One message as kombu's Redis transport stores it: a JSON envelope whose ``body`` is the
    base64 of the serialized Celery protocol 2 body ``[args, kwargs, embed]``; the task name and
    the ETA travel in the headers. ``argsrepr`` is a display string (truncated, ``repr`` quoting),
    so nothing here reads it."""
    envelope = json.loads(raw)
    headers = envelope["headers"]
    assert "task" in headers, f"not a Celery protocol 2 message: {sorted(headers)}"
    assert envelope["content-type"] == "application/json", envelope["content-type"]
    body: bytes | str = envelope["body"]
    if envelope["properties"].get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args, kwargs, _embed = json.loads(body)
    eta = headers.get("eta")
    return QueuedTask(
        task=headers["task"], args=list(args), kwargs=dict(kwargs), eta=datetime.fromisoformat(eta) if eta else None
    )


def queued_tasks(broker: redis.Redis, queue: str, *, task: str | None = None) -> list[QueuedTask]:
    """The messages waiting in ``queue`` (those of ``task`` only, if given), oldest first.

    kombu LPUSHes a message onto the list named after its queue and consumers pop from the
    other end, so the list holds the newest message first. Messages a worker has taken but not
    acknowledged are not in the list (kombu keeps them in its ``unacked`` hash).
    """
    messages = [decode_message(raw) for raw in reversed(broker.lrange(queue, 0, -1))]
    return [m for m in messages if task is None or m.task == task]
