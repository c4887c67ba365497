"""The fine wheel: one ``fire_due`` tick per MINOOTS_TICK bucket, published with an ETA.

A tick claims *every* due timer, so one tick per bucket is enough and duplicates are harmless.
De-duplication is cheap and best-effort: a marker per bucket in the cache (Redis ``SET NX``
in production), which also says where the bucket's tick is:

- ``p:<ms>``: published at that instant (epoch milliseconds) and not yet taken by a worker. It
  is written just *before* the message is sent (so that concurrent creates publish one tick,
  not one each) and dropped again when the broker refuses the message. A process killed
  between the two leaves it behind with no tick: a worker takes a published tick within
  moments (ETA tasks do not count against the prefetch limit), so a ``p:`` marker older than a
  reconcile interval means the tick never left.
- ``h:<holder>``: a worker took the tick and holds it until its ETA (``tick_held``, from the
  worker's ``task_received`` signal). ``<holder>`` names the worker process *and* its broker
  connection, and the worker keeps ``tickholder:<holder>`` alive in the cache every
  HOLDER_HEARTBEAT_SECONDS. A worker that is SIGKILLed (or whose connection dropped: Celery
  forgets the ETA tasks of a closed connection) stops that heartbeat, and its held ticks stay
  in Redis's unacked set until ``visibility_timeout`` (hours): the reconciler sees the holder's
  heartbeat gone and publishes those buckets' ticks again.

``ticks_restore`` is the reconciler's side: one ``get_many`` of the markers of the armed buckets
within the horizon, one of their holders' heartbeats, and a fresh tick for every bucket whose
marker vanished (Redis flushed or restarted), whose holder is dead, or whose tick never left.
The steady path stays one marker write per bucket on create and one per tick taken by a worker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
import weakref
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.utils import timezone
from redis.exceptions import ResponseError

from timers import tick_wire
from timers.publishing import FIRE_DUE, publish, publish_each

log = logging.getLogger(__name__)

_MARKER_PREFIX = "tick:"
_HOLDER_PREFIX = "tickholder:"
_PROCESS_PREFIX = "workerprocess:"
_PUBLISHED = "p:"
_HELD = "h:"

# A worker holding ticks refreshes its heartbeat this often; it counts as dead once the
# heartbeat is HOLDER_TTL_SECONDS old (a few missed beats, so a busy worker is not taken for a
# dead one; a false alarm costs one duplicate tick per bucket, nothing more).
HOLDER_HEARTBEAT_SECONDS = 1.0
HOLDER_TTL_SECONDS = 3
PROCESS_BEAT_KEPT_SECONDS = 60
# The attribute of a kombu Connection that names it as a holder: a new connection (the worker
# reconnected) is a new holder, since Celery drops the ETA tasks of a closed connection.
_CONNECTION_HOLDER_ATTR = "_minoots_tick_holder"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def tick_ms() -> int:
    return max(1, int(settings.MINOOTS_TICK.total_seconds() * 1000))


def bucket_of(moment: datetime) -> int:
    # Integer arithmetic on timedeltas: float timestamps would misplace instants near an edge.
    return (moment - _EPOCH) // timedelta(milliseconds=tick_ms())


def next_bucket_start(bucket: int) -> datetime:
    """The first instant after ``bucket`` (buckets are half-open: [start, next start))."""
    return _EPOCH + timedelta(milliseconds=(bucket + 1) * tick_ms())


def tick_eta(bucket: int) -> datetime:
    """When a bucket's tick is due: the bucket's first instant, whichever of its timers made
    it (a timer created later may fall earlier in the bucket); the tick then waits in its task
    for each of the bucket's timers (``engine.fire_due``)."""
    return next_bucket_start(bucket - 1)


def _marker_ttl() -> int:
    return int(settings.MINOOTS_ARM_HORIZON.total_seconds()) + 60


def _marker_key(bucket: int) -> str:
    return f"{_MARKER_PREFIX}{bucket}"


def _published_mark(at: datetime | None = None) -> str:
    return f"{_PUBLISHED}{int((at or timezone.now()).timestamp() * 1000)}"


def _drop_marker(bucket: int) -> None:
    try:
        cache.delete(_marker_key(bucket))
    except Exception:
        log.warning("tick marker cache unavailable", exc_info=True)


def ensure_tick(fire_at: datetime) -> bool:
    """Make sure a tick covers ``fire_at``'s bucket. Return True if this call published one.

    Never raises: the timer is already safe in the database, and the reconciler repairs a tick
    that could not be published (broker down): the marker is dropped again, so the next pass
    sees a bucket without a tick.
    """
    bucket = bucket_of(fire_at)
    pushed = _mark_and_push([bucket])
    if pushed is not None:
        return bool(pushed)
    try:
        if not cache.add(_marker_key(bucket), _published_mark(), timeout=_marker_ttl()):
            return False
    except Exception:  # cache down: publish anyway, a duplicate tick is harmless
        log.warning("tick marker cache unavailable", exc_info=True)
        return publish_tick(bucket=bucket, eta=tick_eta(bucket))
    if publish_tick(bucket=bucket, eta=tick_eta(bucket)):
        return True
    _drop_marker(bucket)
    return False


def ensure_ticks(fire_ats: list[datetime]) -> int:
    """ensure_tick for many buckets: one cache round trip to skip those already marked, then
    one to mark the others and push their ticks (``tick_wire``). Through Celery instead: one
    round trip to mark them (Redis; one per bucket with other caches), then their ticks in one
    publish batch.

    A batch create's timers may fall in a thousand buckets: a round trip per marker was most of
    its time, and under gevent each one waits for the other requests of the process."""
    by_key: dict[str, datetime] = {}
    for f in sorted(fire_ats):
        by_key.setdefault(_marker_key(bucket_of(f)), f)
    pushed = _mark_and_push([bucket_of(f) for f in by_key.values()], skip_marked=True)
    if pushed is not None:
        return len(pushed)
    try:
        present = cache.get_many(list(by_key))
    except Exception:
        present = {}
    missing = {key: f for key, f in by_key.items() if key not in present}
    marked = _mark_published(list(missing))
    if marked is None:
        return sum(1 for f in missing.values() if ensure_tick(f))
    buckets = [bucket_of(missing[key]) for key in marked]
    now = timezone.now()
    try:
        # One pipeline for every tick: a round trip per tick was a third of a batch create's
        # publishing (kombu's Producer.batch, which does not retry a failed flush).
        publish_each(FIRE_DUE, [({"bucket": b}, _future(tick_eta(b), now)) for b in buckets])
    except Exception:
        # None, some or all of them left: each again on its own, with Celery's publish retry
        # (a duplicate tick is harmless); a bucket whose tick still fails loses its marker, so
        # the reconciler publishes it.
        log.warning("could not publish %d fire_due tick(s) together; one by one", len(buckets), exc_info=True)
        published = 0
        for bucket in buckets:
            if publish_tick(bucket=bucket, eta=tick_eta(bucket)):
                published += 1
            else:
                _drop_marker(bucket)
        return published
    return len(buckets)


def _future(eta: datetime, now: datetime) -> datetime | None:
    """``eta``, or None (at once) when it is already past, as ``publish_tick`` sends it."""
    return eta if eta > now else None


def _redis_markers(keys: list[str]) -> tuple[Any, list[str], bytes, int]:
    """For marker ``keys`` on the Redis cache: its client, the keys as the cache names them in
    Redis, a published marker's value as the cache writes it (so that ``get`` reads it back), and
    the markers' ttl in seconds."""
    backend: Any = caches["default"]  # its client's internals, which the stubs do not name
    made = [backend.make_and_validate_key(k) for k in keys]
    client = backend._cache.get_client(made[0], write=True)
    value = backend._cache._serializer.dumps(_published_mark())
    return client, made, value, int(backend.get_backend_timeout(_marker_ttl()))


def _mark_published(keys: list[str]) -> list[str] | None:
    """``cache.add`` of a published marker at each of ``keys`` (marker keys), in one Redis round
    trip: the keys this call marked (their ticks are its to publish). None when the cache is not
    Redis or did not answer: the caller then goes bucket by bucket (``ensure_tick``)."""
    if not keys:
        return []
    if not isinstance(caches["default"], RedisCache):
        return None
    try:
        client, made, value, ttl = _redis_markers(keys)
        pipe = client.pipeline(transaction=False)
        for k in made:
            pipe.set(k, value, ex=ttl, nx=True)
        results = pipe.execute()
    except Exception:
        log.warning("tick marker cache unavailable", exc_info=True)
        return None
    return [key for key, ok in zip(keys, results, strict=True) if ok]


def _mark_and_push(buckets: list[int], *, skip_marked: bool = False) -> list[int] | None:
    """Mark each of ``buckets`` published and push its tick, in one Redis round trip where the
    broker and the cache share it (``tick_wire``): the buckets this call pushed a tick for. None
    where that does not hold or Redis did not answer; the caller then marks and publishes through
    the cache and Celery (which retries), and a marker this call did set (the reply was lost)
    stops it from publishing twice. ``skip_marked``: first one MGET of the markers, so that no
    tick is built for a bucket already marked (a batch's buckets mostly are)."""
    if not buckets:
        return []
    now = timezone.now()
    try:
        if not tick_wire.usable():
            return None
        client, made, value, ttl = _redis_markers([_marker_key(b) for b in buckets])
        if skip_marked:
            unmarked = [i for i, v in enumerate(client.mget(made)) if v is None]
            buckets, made = [buckets[i] for i in unmarked], [made[i] for i in unmarked]
            if not buckets:
                return []
        messages = [tick_wire.tick_message(b, _future(tick_eta(b), now)) for b in buckets]
        pushed = tick_wire.mark_and_push(client, markers=made, value=value, ttl=ttl, ticks=messages)
    except ResponseError as exc:
        # NOSCRIPT is redis-py's to handle; an ACL without scripting or a proxy without EVALSHA
        # refuses every call alike: stop trying. Anything else (OOM...) may pass.
        if str(exc).startswith("NOPERM") or "unknown command" in str(exc):
            log.warning("Redis refused the tick script (%s); ticks go through Celery from now on", exc)
            tick_wire.refuse(str(exc))
        else:
            log.warning("could not mark and push %d tick(s) in one go; through Celery", len(buckets), exc_info=True)
        return None
    except Exception:
        log.warning("could not mark and push %d tick(s) in one go; through Celery", len(buckets), exc_info=True)
        return None
    return [buckets[i] for i in pushed]


def republish_tick(*, bucket: int, eta: datetime, at: datetime | None = None) -> bool:
    """Publish the bucket's tick again (it ran early, or the reconciler found it lost) and mark
    it published (``at``, default now), so the reconciler does not take the bucket for one whose
    tick was lost."""
    try:
        cache.set(_marker_key(bucket), _published_mark(at), timeout=_marker_ttl())
    except Exception:
        log.warning("tick marker cache unavailable", exc_info=True)
    if publish_tick(bucket=bucket, eta=eta):
        return True
    _drop_marker(bucket)
    return False


def forget_tick(bucket: int) -> None:
    """Drop the bucket's marker once its tick ran, so a later timer in the bucket publishes again."""
    _drop_marker(bucket)


def publish_tick(*, bucket: int | None, eta: datetime | None) -> bool:
    """Publish ``fire_due`` (immediately when ``eta`` is None or past). False if the broker refused."""
    try:
        publish(FIRE_DUE, kwargs={"bucket": bucket}, eta=None if eta is None else _future(eta, timezone.now()))
    except Exception:
        log.error("could not publish fire_due tick; the reconciler will repair it", exc_info=True)
        return False
    return True


# --- the worker's side: which worker holds a tick ----------------------------------------------


class _Heartbeat:
    """The heartbeat of the holders of this process: one daemon thread, started at the first
    tick taken, that keeps ``tickholder:<holder>`` alive for the consumer's current connection."""

    lock = threading.Lock()
    consumer: weakref.ReferenceType[Any] | None = None
    thread: threading.Thread | None = None
    beaten: str | None = None  # the holder whose heartbeat was last written


def _holder_of(consumer: Any, *, create: bool) -> str | None:
    """The holder name of the consumer's current broker connection (None while it has none)."""
    connection = getattr(consumer, "connection", None)
    if connection is None:
        return None
    holder: str | None = getattr(connection, _CONNECTION_HOLDER_ATTR, None)
    if holder is None and create:
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        setattr(connection, _CONNECTION_HOLDER_ATTR, holder)
    return holder


def _beat(holder: str) -> None:
    # The holder (this connection of this process) and the process itself: what a worker holds
    # in memory (running actions) lives as long as the process, not its connection.
    cache.set(f"{_HOLDER_PREFIX}{holder}", 1, timeout=HOLDER_TTL_SECONDS)
    _beat_process(process_of(holder))
    _Heartbeat.beaten = holder


def _beat_process(process: str) -> None:
    # The time of the beat, kept a minute: a stale one says "gone" at the first look, without
    # waiting to see a missing key twice (``processes_last_beat``).
    cache.set(f"{_PROCESS_PREFIX}{process}", time.time(), timeout=PROCESS_BEAT_KEPT_SECONDS)


def process_of(holder: str) -> str:
    """The worker process (``host:pid``) a holder name belongs to."""
    return holder.rsplit(":", 1)[0]


def this_process() -> str | None:
    """This worker process's name (``host:pid``) once its heartbeat runs (it has taken a
    message from the broker), else None: a run claimed here is recorded with it
    (``ActionRun.worker``) so the reconciler can tell when this process is gone."""
    beaten, thread = _Heartbeat.beaten, _Heartbeat.thread
    if beaten is None or thread is None or not thread.is_alive():
        return None  # no heartbeat (any more): nothing would tell this process is alive
    return process_of(beaten)


def processes_last_beat(processes: set[str]) -> dict[str, float] | None:
    """When each of ``processes`` (``process_of`` names) last beat (epoch seconds), for those
    that beat within PROCESS_BEAT_KEPT_SECONDS; None when the cache cannot tell. A process beats
    every HOLDER_HEARTBEAT_SECONDS while its heartbeat runs, through reconnects too."""
    if not processes:
        return {}
    try:
        found = cache.get_many([f"{_PROCESS_PREFIX}{p}" for p in processes])
    except Exception:
        return None
    return {k[len(_PROCESS_PREFIX) :]: float(v) for k, v in found.items() if isinstance(v, int | float)}


def _heartbeat_loop() -> None:
    failing = False
    while True:
        consumer = _Heartbeat.consumer() if _Heartbeat.consumer is not None else None
        if consumer is None:
            return
        # A connection without a holder name took no tick yet: the previous one's heartbeat
        # stops, and with it the ticks Celery dropped with the old connection are re-published.
        holder = _holder_of(consumer, create=False)
        try:
            if holder is not None:
                _beat(holder)
                failing = False
            elif _Heartbeat.beaten is not None:
                # The process lives on through a reconnect: its running actions are not orphans.
                _beat_process(process_of(_Heartbeat.beaten))
                failing = False
        except Exception:
            if not failing:  # once per outage, not every second
                log.warning("tick holder heartbeat: cache unavailable", exc_info=True)
            failing = True
        time.sleep(HOLDER_HEARTBEAT_SECONDS)


def tick_held(*, bucket: int, consumer: Any) -> None:
    """A worker's consumer took the ETA tick of ``bucket``: mark the bucket held by it.

    Called on the consumer's thread when the message arrives (one cache write per tick); never
    raises, a marker left ``p:`` only costs a duplicate tick later.
    """
    try:
        holder = consumer_holder(consumer)
        if holder is None:
            return
        cache.set(_marker_key(bucket), f"{_HELD}{holder}", timeout=_marker_ttl())
    except Exception:
        log.warning("could not mark tick of bucket %s as held", bucket, exc_info=True)


def consumer_holder(consumer: Any) -> str | None:
    """The holder name of a worker consumer's current broker connection, its heartbeat
    running (None while it has no connection). What a worker takes from the broker and keeps
    for a while (ETA ticks here, action messages in ``actions.holders``) is marked with it, so
    the reconciler can tell when the worker is gone: ``holders_alive``. May raise (cache down)."""
    holder = _holder_of(consumer, create=True)
    if holder is None:
        return None
    with _Heartbeat.lock:
        if _Heartbeat.consumer is None or _Heartbeat.consumer() is not consumer:
            _Heartbeat.consumer = weakref.ref(consumer)
        if _Heartbeat.thread is None or not _Heartbeat.thread.is_alive():
            _Heartbeat.thread = threading.Thread(target=_heartbeat_loop, name="tick-holder-heartbeat", daemon=True)
            _Heartbeat.thread.start()
    if _Heartbeat.beaten != holder:
        _beat(holder)  # alive before anything names it as a holder
    return holder


def holders_alive(holders: set[str]) -> set[str] | None:
    """Those of ``holders`` whose heartbeat is fresh (within HOLDER_TTL_SECONDS); None when
    the cache cannot tell."""
    if not holders:
        return set()
    try:
        return {k[len(_HOLDER_PREFIX) :] for k in cache.get_many([f"{_HOLDER_PREFIX}{h}" for h in holders])}
    except Exception:
        return None


# --- the reconciler's side: ticks that are gone --------------------------------------------------


def ticks_restore(firsts: dict[int, datetime], *, now: datetime) -> int:
    """Publish a tick for every bucket of ``firsts`` (bucket -> its earliest armed ``fire_at``)
    whose tick is gone. Return how many were published.

    Gone means: no marker (Redis flushed or restarted: marker and message went together), a
    holder whose heartbeat stopped (the worker was killed, or its connection dropped), or a
    ``p:`` marker older than a reconcile interval (the publisher died before sending it) for a
    bucket due before the next pass but one (so a worker that never marks what it takes, such
    as one of an older release during a deploy, costs a duplicate per due bucket, not a storm).
    A marker this code did not write is trusted until it expires.
    """
    if not firsts:
        return 0
    keys = {_marker_key(bucket): bucket for bucket in firsts}
    try:
        marks = cache.get_many(list(keys))
    except Exception:
        log.warning("tick marker cache unavailable", exc_info=True)
        return ensure_ticks(list(firsts.values()))
    holders = {m[len(_HELD) :] for m in marks.values() if isinstance(m, str) and m.startswith(_HELD)}
    # Cannot tell: trust the holders (the overdue repair is the backstop).
    alive = holders_alive(holders)
    if alive is None:
        alive = holders
    interval = max(settings.MINOOTS_RECONCILE_INTERVAL, timedelta(seconds=1))
    stale_before_ms = (now - interval).timestamp() * 1000
    due_soon = now + 2 * interval
    missing: list[datetime] = []
    lost: list[int] = []
    for key, bucket in keys.items():
        mark = marks.get(key)
        if mark is None:
            missing.append(firsts[bucket])
        elif not isinstance(mark, str):
            continue
        elif mark.startswith(_HELD):
            if mark[len(_HELD) :] not in alive:
                lost.append(bucket)
        elif mark.startswith(_PUBLISHED) and firsts[bucket] <= due_soon:
            try:
                published_ms = int(mark[len(_PUBLISHED) :])
            except ValueError:
                continue
            if published_ms < stale_before_ms:
                lost.append(bucket)
    if lost:
        log.warning(
            "republishing %d tick(s) lost with their worker or never published",
            len(lost),
            extra={"event": "ticks_lost"},
        )
    published = sum(1 for f in missing if ensure_tick(f))
    return published + sum(1 for bucket in lost if republish_tick(bucket=bucket, eta=tick_eta(bucket), at=now))
