"""kombu's Redis transport, with a channel close that survives a Redis that went away.

The crash it prevents (kombu 5.7.0, celery 5.7.0): Redis is killed (or ``SHUTDOWN NOSAVE``)
while the worker holds unacknowledged messages, such as the ETA ticks it keeps until they are
due. The consumer sees the connection error and cleans up in
``Consumer.on_connection_error_after_connected`` (celery/worker/consumer/consumer.py):

1. ``connection.collect()`` closes the default channel; the Redis channel's ``close`` first reads
   the reply of its pending BRPOP (or deletes its auto-delete fanout queues), which raises
   ``ConnectionError`` *before* the channel is marked closed. kombu swallows that
   (``maybe_close_channel``), then drops its transport's reference to the connection
   (``_do_close_transport``: ``transport.client = None``).
2. ``connection.close()`` closes the same default channel again. This time it goes on to
   ``QoS.restore_unacked_once`` ("Restoring N unacknowledged message(s)"), whose
   ``restore_unacked`` needs a Redis client; the channel had dropped its pool, so it builds a new
   one from ``_connparams``, which reads ``self.connection.client.hostname``: ``AttributeError:
   'NoneType' object has no attribute 'hostname'``. That is not a connection error, so it
   escapes ``ignore_errors`` and the worker exits with "Unrecoverable error" (compare
   celery/kombu#970 and #582, the same attribute read from a connection already closed).

Here the channel keeps the connection parameters it was first built with, so closing it late
still reaches the right Redis, and handing the held messages back to a Redis that is not there
is logged instead of raised: they were lost with Redis (or stay in its unacked set until
``visibility_timeout``), and the reconciler re-publishes the ticks of their timers. The worker
then reconnects as usual and goes on consuming.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis
from redis.exceptions import ConnectionError as RedisConnectionError

logger = logging.getLogger(__name__)


class QoS(redis.QoS):
    def restore_unacked(self, client: Any = None) -> None:
        """Hand the held messages back to Redis, or give them up when Redis cannot be reached.

        kombu calls this while closing a channel (``restore_unacked_once``); an error here would
        leave the channel half closed, and there is nothing better to do with the messages:
        Postgres holds the timers and the reconciler re-publishes their ticks.
        """
        delivered = self._delivered
        held = len(delivered) if delivered is not None else 0
        try:
            super().restore_unacked(client)
        except self.channel.connection.connection_errors as exc:
            logger.warning(
                "could not hand %d unacknowledged message(s) back to Redis (%r); "
                "the reconciler re-publishes the ticks of their timers",
                held,
                exc,
            )
            if delivered is not None:
                delivered.clear()


class Channel(redis.Channel):
    QoS = QoS

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        """kombu's connection parameters, remembered: a channel closed after its kombu Connection
        let go of the transport (``transport.client = None``) still knows where Redis is."""
        saved = self.__dict__.setdefault("_saved_connparams", {})
        if self.connection.client is None and asynchronous not in saved:
            raise RedisConnectionError("the broker connection was already closed")
        if self.connection.client is not None:
            # kombu's private method, not in its stubs.
            saved[asynchronous] = super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]
        return dict(saved[asynchronous])

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """kombu's, but one client per pool instead of a new ``redis.Redis`` for every message
        published (building one costs about as much as the LPUSH it sends). A client holds no
        state of its own: each command takes a connection from the pool and gives it back.
        A new pool (the channel reconnected) gets a new client."""
        if client:
            yield client
            return
        pool = self.pool
        kept = self.__dict__.get("_kept_client")
        if kept is None or kept[0] is not pool:
            kept = self.__dict__["_kept_client"] = (pool, self._create_client())  # type: ignore[attr-defined]
        yield kept[1]


class Transport(redis.Transport):
    Channel = Channel
