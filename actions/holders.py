"""Which worker holds an action run, so the reconciler notices a dead one in seconds.

An action worker keeps the ``run_action`` / ``run_actions`` messages it took (acks-late,
prefetched) until it has run them, and the runs it claimed stay ``running`` under a lease of
MINOOTS_ACTION_LEASE (5 minutes). When the worker is SIGKILLed, or the machine loses power,
both would wait: the lease for its running runs, Redis's visibility timeout (hours) for the
messages it had prefetched, whose publish markers also keep the reconciler from publishing
those runs again.

So a run claimed by a worker records the worker process (``ActionRun.worker``, ``host:pid``,
written by the claim itself), and every message a worker receives marks its runs with the
worker's holder name (one cache write per message: ``runs_mark_held``, from the
``task_received`` signal), the name of the consumer's broker connection; ``timers.ticks`` keeps
the heartbeats of both alive every second. The
reconciler asks ``runs_held_by_dead_workers``: a run whose holder's heartbeat has been gone for
DEAD_AFTER_SECONDS (a holder missing at one pass is only suspected; a worker is not declared
dead for one late beat) is recovered at once: a running one has its lease ended (the attempt in
flight is recorded as lost, and only that attempt runs again), a pending one is published again
whatever its marker says. A run without a mark (Redis flushed, or a worker of an older release)
keeps the lease and the marker as before.

A worker can also die *between* taking a message and marking its runs: kombu's BRPOP removes
the message from the queue when Redis sends it, and the mark is written only once the worker
has read it, stored it in the unacked set and run its ``task_received`` signal. On a loaded
machine that is tens of milliseconds, and a SIGKILL in it left the message's runs published
(marker set), unmarked and in no queue: nothing recovered them before their publish marker
expired with the lease (5 minutes). ``runs_lost_in_transit`` finds them: a published, overdue
run that no worker has marked and whose message is not waiting in the actions queue, for
DEAD_AFTER_SECONDS (a live worker marks what it takes within milliseconds), is published
again, once per lease (a duplicate costs nothing: the claim).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Sequence
from typing import Any, cast
from uuid import UUID

from django.conf import settings
from django.core.cache import cache
from kombu import Connection

from timers.ticks import HOLDER_TTL_SECONDS, consumer_holder, holders_alive, process_of, processes_last_beat

log = logging.getLogger(__name__)

_RUN_PREFIX = "actions:holder:"
_SUSPECT_PREFIX = "actions:holder-missing:"
_UNACCOUNTED_PREFIX = "actions:unaccounted:"
# The value of a run's unaccounted key once it was published again: not again for the lease.
_REPUBLISHED = "republished"
# More messages than this waiting in the actions queue: too many to read every pass (reading
# and decoding 200 batches of 100 runs costs about 12 ms of CPU, 1,000 of them 60 ms), and a
# run not marked may well be among them; its publish marker and lease recover it as before.
# Read only while some published, overdue run is marked by no worker.
QUEUE_SCAN_LIMIT = 200
# A holder is dead once its heartbeat has been missing this long (its TTL is 3 s, beaten
# every 1 s): a worker busy for a moment is not taken for a dead one.
DEAD_AFTER_SECONDS = 2.0


def runs_mark_held(*, run_ids: Sequence[str], consumer: Any) -> None:
    """The worker's ``consumer`` took a message for ``run_ids``. Never raises: a run left
    unmarked is recovered by its lease and its marker, as before."""
    if not run_ids:
        return
    try:
        holder = consumer_holder(consumer)
        if holder is None:
            return
        ttl = int(settings.MINOOTS_ACTION_LEASE.total_seconds() + settings.MINOOTS_ARM_HORIZON.total_seconds())
        cache.set_many({f"{_RUN_PREFIX}{run_id}": holder for run_id in run_ids}, timeout=ttl)
    except Exception:
        log.warning("could not mark %d action run(s) as held", len(run_ids), exc_info=True)


def _run_marks(run_ids: Sequence[UUID]) -> dict[str, Any] | None:
    """The holder marks of ``run_ids`` present in the cache (key -> mark), in one read; None
    when there is nothing to read or the cache does not answer (nothing can be told then)."""
    if not run_ids:
        return None
    try:
        marks: dict[str, Any] = cache.get_many([f"{_RUN_PREFIX}{run_id}" for run_id in run_ids])
    except Exception:
        return None
    return marks


def runs_held_by_dead_workers(run_ids: Sequence[UUID], *, running: bool) -> list[UUID]:
    """Those of ``run_ids`` held by a worker that is gone (see the module). ``running``: runs
    being executed, which live as long as the worker process (its connection may have been
    replaced meanwhile); otherwise messages waiting in a worker, which go with its connection."""
    marks = _run_marks(run_ids)
    if marks is None:
        return []
    holder_of = {run_id: marks[f"{_RUN_PREFIX}{run_id}"] for run_id in run_ids if f"{_RUN_PREFIX}{run_id}" in marks}
    if running:
        owner = {run_id: process_of(str(h)) for run_id, h in holder_of.items()}
        dead = _processes_gone(set(owner.values()))
    else:
        owner = {run_id: str(h) for run_id, h in holder_of.items()}
        alive = holders_alive(set(owner.values()))
        if alive is None:
            return []
        dead = _confirmed_dead(set(owner.values()) - alive)
    return [run_id for run_id, who in owner.items() if who in dead]


def _processes_gone(processes: set[str]) -> set[str]:
    """Of these worker processes, those gone: their last beat is older than the heartbeat's
    TTL plus DEAD_AFTER_SECONDS (known at the first look), or it is missing altogether (Redis
    lost it, or the process died over a minute ago) for DEAD_AFTER_SECONDS (two looks: right
    after Redis lost everything, a live process beats again within a second)."""
    beats = processes_last_beat(processes)
    if beats is None:
        return set()
    now = time.time()
    stale = {p for p, at in beats.items() if now - at > HOLDER_TTL_SECONDS + DEAD_AFTER_SECONDS}
    return stale | _confirmed_dead(processes - set(beats))


def runs_of_dead_workers(running: Sequence[tuple[UUID, str]]) -> list[UUID]:
    """Of running runs ``(id, worker)`` (``ActionRun.worker``, the claiming process), those
    whose worker process is gone. The worker is in the database, so this holds when Redis lost
    the runs' marks too (a whole-machine restart); a run claimed by a process without a
    heartbeat ("" worker) falls back to its message's mark."""
    known = {run_id: worker for run_id, worker in running if worker}
    unknown = [run_id for run_id, worker in running if not worker]
    dead_runs = runs_held_by_dead_workers(unknown, running=True)
    if known:
        dead = _processes_gone(set(known.values()))
        dead_runs += [run_id for run_id, worker in known.items() if worker in dead]
    return dead_runs


def _confirmed_dead(missing: set[str], *, prefix: str = _SUSPECT_PREFIX, timeout: int | None = None) -> set[str]:
    """Of the holders whose heartbeat is missing now, those missing for DEAD_AFTER_SECONDS
    (of other things missing now, with their own ``prefix``: runs unaccounted for)."""
    if not missing:
        return set()
    now = time.time()
    keys = {f"{prefix}{h}": h for h in missing}
    try:
        since = cache.get_many(list(keys))
        cache.set_many(
            {key: now for key in keys if key not in since},
            timeout=timeout or int(settings.MINOOTS_ACTION_LEASE.total_seconds()),
        )
    except Exception:
        return set()
    # With the heartbeat's TTL, a holder is dead HOLDER_TTL_SECONDS + DEAD_AFTER_SECONDS after
    # its last beat at the earliest, at the first reconcile pass after that.
    return {keys[key] for key, first in since.items() if isinstance(first, float) and now - first >= DEAD_AFTER_SECONDS}


def runs_unmark(run_ids: Sequence[UUID]) -> None:
    """Forget who held these runs (they were just recovered): the next reconcile pass leaves
    them to their new message and lease rather than recovering them again."""
    if run_ids:
        try:
            cache.delete_many([f"{_RUN_PREFIX}{run_id}" for run_id in run_ids])
        except Exception:
            log.warning("could not forget the holders of %d action run(s)", len(run_ids), exc_info=True)


def runs_lost_in_transit(run_ids: Sequence[UUID]) -> list[UUID]:
    """Of ``run_ids`` (pending and overdue, their publish marker set), those whose message was
    lost with a worker that died between taking it and marking its runs (see the module): no
    worker marked them and the actions queue does not hold them, now and DEAD_AFTER_SECONDS
    ago. Each is reported once per lease. Nothing (cannot tell) when the cache or the broker
    does not answer, the broker is not Redis, or the queue holds more than QUEUE_SCAN_LIMIT."""
    marks = _run_marks(run_ids)
    if marks is None:
        return []
    unmarked = [run_id for run_id in run_ids if f"{_RUN_PREFIX}{run_id}" not in marks]
    if not unmarked:
        return []
    queued = queued_run_ids()
    if queued is None:
        return []
    missing = {str(run_id) for run_id in unmarked if str(run_id) not in queued}
    # Long enough to span two reconcile passes, short enough that a run seen missing once (a
    # worker was between taking and marking it) does not count as missing much later.
    interval = max(settings.MINOOTS_RECONCILE_INTERVAL.total_seconds(), 1.0)
    lost = _confirmed_dead(missing, prefix=_UNACCOUNTED_PREFIX, timeout=int(3 * interval + DEAD_AFTER_SECONDS) + 1)
    if not lost:
        return []
    try:
        cache.set_many(
            {f"{_UNACCOUNTED_PREFIX}{run_id}": _REPUBLISHED for run_id in lost},
            timeout=int(settings.MINOOTS_ACTION_LEASE.total_seconds()),
        )
    except Exception:
        return []  # could not remember it: leave it to its lease rather than risk a storm
    log.warning(
        "%d published action run(s) in no queue and held by no worker: their message was lost "
        "with a worker that died taking it",
        len(lost),
        extra={"event": "runs_lost_in_transit"},
    )
    return [run_id for run_id in unmarked if str(run_id) in lost]


def queued_run_ids(limit: int | None = None) -> set[str] | None:
    """The ids of the runs whose ``run_action`` / ``run_actions`` message waits in the actions
    queue (every priority level of it); None when that cannot be told cheaply: the broker is
    not Redis or does not answer, or more than ``limit`` (QUEUE_SCAN_LIMIT) messages wait."""
    limit = QUEUE_SCAN_LIMIT if limit is None else limit
    from celery import current_app  # noqa: PLC0415 (the app is configured after this module loads)

    from timers.publishing import RUN_ACTION, RUN_ACTIONS  # noqa: PLC0415

    queue = str(settings.CELERY_TASK_ROUTES["actions.*"]["queue"])
    try:
        # The app's broker connection pool (kombu's ConnectionPool: the stubs call it a
        # producer pool).
        with cast(Connection, current_app.pool.acquire(block=True, timeout=2)) as conn:
            if conn.transport.driver_type != "redis":
                return None
            channel: Any = conn.default_channel  # kombu.transport.redis.Channel
            keys = [channel._q_for_pri(queue, pri) for pri in channel.priority_steps]
            client = channel.client
            pipe = client.pipeline()
            for key in keys:
                pipe.llen(key)
            if sum(pipe.execute()) > limit:
                return None
            pipe = client.pipeline()
            for key in keys:
                pipe.lrange(key, 0, limit)
            raws = [raw for found in pipe.execute() for raw in found]
    except Exception:
        log.warning("could not read the actions queue", exc_info=True)
        return None
    if len(raws) > limit:
        return None  # it grew meanwhile
    ids: set[str] = set()
    for raw in raws:
        try:
            envelope = json.loads(raw)
            name = envelope["headers"]["task"]
            if name not in (RUN_ACTION, RUN_ACTIONS):
                continue
            body = envelope["body"]
            if envelope["properties"].get("body_encoding") == "base64":
                body = base64.b64decode(body)
            args = json.loads(body)[0]
            ids.update([str(args[0])] if name == RUN_ACTION else [str(r) for r in args[0]])
        except (ValueError, KeyError, IndexError, TypeError):
            continue  # not a message this reads: it holds none of our runs
    return ids
