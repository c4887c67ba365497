"""``fire_due`` ticks written straight onto kombu's Redis queue, each with its bucket's marker in
the same round trip.

Why not Celery's ``send_task``: for one tick, a message of about 1 KB and one LPUSH, it spent
about 350 µs of CPU (routing, signals, kombu's producer and its declare bookkeeping, building the
envelope) where the LPUSH costs 25 µs, and the marker's ``SET NX`` before it was a round trip of
its own. On a create that was the largest cost after DRF itself (bench/batch_profile.py
``--single --profile --cpu``). Here a create makes one ``EVALSHA`` that sets the marker and, only
if this call set it, pushes the tick; a batch create does the same for all its new buckets in one.

What is pushed is what ``send_task(FIRE_DUE, kwargs={"bucket": b}, eta=e)`` pushes with this
project's settings: Celery's task protocol 2 (its headers, and the ``[args, kwargs, embed]`` body
in JSON) inside the envelope kombu's virtual transport LPUSHes onto the queue's list (the body in
base64, ``delivery_info`` naming the default exchange ``""`` and the queue as routing key, which is
how Celery publishes to a direct queue). ``before_task_publish`` is sent as Celery sends it, so
its receivers (the trace id) still add their headers. tests/timers/test_tick_wire.py holds the two
messages side by side on a real Redis and has a real worker run one: an upgrade of Celery or
kombu that changes either fails there.

Only where that holds (``usable``): kombu's Redis transport without a key prefix, the cache on
the broker's own Redis database (the settings give both CELERY_BROKER_URL), and ``fire_due``
routed to a direct queue. Elsewhere (the embedded filesystem broker) ticks go through Celery.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import datetime
from functools import lru_cache
from typing import Any

from celery import current_app
from celery.signals import before_task_publish
from celery.utils.nodenames import anon_nodename
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache

from timers.publishing import FIRE_DUE

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}

# KEYS: the markers, then the queue; ARGV: the markers' ttl, then per marker its value and its
# tick. Sets each marker that is not there and pushes its tick; returns the (1-based) positions
# pushed. A script runs alone on the server, so no other create sees a marker without its tick.
_MARK_AND_PUSH = """
local queue = KEYS[#KEYS]
local pushed = {}
for i = 1, #KEYS - 1 do
  if redis.call('SET', KEYS[i], ARGV[2 * i], 'NX', 'EX', ARGV[1]) then
    redis.call('LPUSH', queue, ARGV[2 * i + 1])
    pushed[#pushed + 1] = i
  end
end
return pushed
"""

_origin: tuple[int, str] | None = None  # (pid, Celery's anonymous node name of that process)
# Set when this Redis refuses scripts (an ACL, a proxy): the process then stops trying, rather
# than paying a refused round trip and a warning on every create.
_refused: str | None = None


def usable() -> bool:
    """Whether ticks may be written here rather than through Celery (see the module's docstring):
    the cache's Redis is the one Celery publishes to (its write URL), through kombu's Redis
    transport without a key prefix, and fire_due goes to a direct queue at priority 0."""
    if _refused is not None:
        return False
    conf: Any = current_app.conf
    return (
        isinstance(caches["default"], RedisCache)
        and str(getattr(settings, "CELERY_BROKER_TRANSPORT", "")).endswith("redis_transport:Transport")
        and settings.CACHES.get("default", {}).get("LOCATION") == conf.broker_write_url
        and not (conf.broker_transport_options or {}).get("global_keyprefix")
        and conf.task_default_priority in (None, 0)
        and _fire_due_queue() is not None
    )


@lru_cache(maxsize=1)
def _fire_due_queue() -> str | None:
    """The queue Celery routes ``fire_due`` to, when it publishes there through the default
    exchange (a direct queue) at the default priority; None otherwise."""
    route = current_app.amqp.router.route({}, FIRE_DUE, args=(), kwargs={})
    queue = route.get("queue")
    if route.get("priority") not in (None, 0) or queue is None or queue.exchange is None:
        return None
    if queue.exchange.type != "direct" or queue.routing_key not in (None, "", queue.name):
        return None
    return str(queue.name)


def refuse(reason: str) -> None:
    """Redis refused the script (not a missing script, which redis-py loads again): ticks go
    through Celery for the rest of this process."""
    global _refused
    _refused = reason


def _origin_name() -> str:
    global _origin
    if _origin is None or _origin[0] != os.getpid():
        _origin = (os.getpid(), anon_nodename())
    return _origin[1]


def tick_message(bucket: int, eta: datetime | None) -> str:
    """The broker message of ``fire_due(bucket=bucket)`` due at ``eta`` (None: at once), as
    kombu's Redis transport stores it."""
    queue = _fire_due_queue()
    assert queue is not None, "usable() first"
    app: Any = current_app
    task_id = str(uuid.uuid4())
    root_id, parent_id = task_id, None
    parent = app.current_worker_task  # published from a task: Celery links the tick to it
    if parent is not None:
        root_id = parent.request.root_id or parent.request.id
        parent_id = parent.request.id
    # As send_task: where the task is registered (a worker, once its tasks are imported) its
    # time limits go into the message; fire_due sets no other execution option.
    registered = app._tasks.get(FIRE_DUE)
    hard_limit = getattr(registered, "time_limit", None)
    soft_limit = getattr(registered, "soft_time_limit", None)
    kwargs = {"bucket": bucket}
    headers: dict[str, Any] = {
        "lang": "py",
        "task": FIRE_DUE,
        "id": task_id,
        "shadow": None,
        "eta": None if eta is None else eta.isoformat(),
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [hard_limit, soft_limit],
        "root_id": root_id,
        "parent_id": parent_id,
        "argsrepr": "()",
        "kwargsrepr": repr(kwargs),
        "origin": _origin_name(),
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    body = [[], kwargs, _EMBED]
    properties: dict[str, Any] = {
        "correlation_id": task_id,
        "reply_to": app.thread_oid,
        "delivery_mode": 2,
        "priority": 0,
    }
    # Sent as Celery sends it before a publish, for its receivers' headers (the trace id),
    # also for a tick the script then does not push (its bucket was marked meanwhile);
    # after_task_publish is not sent (no receiver here needs it).
    before_task_publish.send(
        sender=FIRE_DUE,
        body=body,
        exchange="",
        routing_key=queue,
        headers=headers,
        properties=properties,
        declare=[],
        retry_policy=None,
    )
    properties.update(
        delivery_info={"exchange": "", "routing_key": queue},
        body_encoding="base64",
        delivery_tag=str(uuid.uuid4()),
    )
    return json.dumps(
        {
            "body": base64.b64encode(json.dumps(body).encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }
    )


def mark_and_push(client: Any, *, markers: list[str], value: bytes, ttl: int, ticks: list[str]) -> list[int]:
    """In one round trip: for each i, set ``markers[i]`` to ``value`` (for ``ttl`` seconds) unless
    it is there, and if this call set it push ``ticks[i]`` (``tick_message``) onto the fire_due
    queue. Returns the indexes (0-based) whose tick was pushed. Raises what Redis raises: then
    the script did not run, or ran whole (a reply lost on the way back)."""
    queue = _fire_due_queue()
    assert queue is not None, "usable() first"
    script = _script(client)
    args: list[Any] = [ttl]
    for tick in ticks:
        args += [value, tick]
    pushed = script(keys=[*markers, queue], args=args, client=client)
    return [int(i) - 1 for i in pushed]


_registered: Any = None  # redis-py's Script: its SHA, loaded into a server on first use there


def _script(client: Any) -> Any:
    global _registered
    if _registered is None:
        _registered = client.register_script(_MARK_AND_PUSH)
    return _registered
