"""Postgres for the gevent web workers: a bounded pool of connections shared by greenlets.

gunicorn serves the API with gevent workers (``gunicorn_conf``): one greenlet per client
connection, so a slow or idle client costs no thread. Django keeps one database connection per
thread, and under gevent a "thread" is a greenlet; without a pool every open client connection
could hold its own Postgres connection. django-db-geventpool's backend (psycopg2 made
cooperative by psycogreen, patched in ``gunicorn_conf.post_fork``) lends each request a
connection from a pool of ``MAX_CONNS`` per process and takes it back when the request ends
(``CONN_MAX_AGE`` 0: Django's "close" returns it), so the number of connections is bounded
whatever the number of clients.

Two changes to the library. Its pool waits forever for a free connection once ``MAX_CONNS``
are lent. Here a request waits at most ``POOL_TIMEOUT`` seconds and then fails with
``OperationalError``, which the API answers as a 503 with Retry-After, like a database
outage, instead of hanging its client. And it checks every connection it lends with a
``SELECT 1`` (a round trip per request); here only a connection that sat in the pool longer
than ``POOL_CHECK_IDLE_SECONDS`` (default 5) is checked, and one psycopg2 already knows closed is
replaced without a query. A connection returned moments ago was working moments ago; if the
server went away in between, that request fails like any query during an outage (a 503 with
Retry-After), and the library's ``close`` then empties the pool, so the next requests connect
afresh.

``settings`` selects this backend only in a process that gevent has patched (the web
workers); the Celery workers, beat and management commands keep Django's own backend.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg2
from django_db_geventpool.backends.postgresql_psycopg2 import base as pooled
from gevent import queue


class BoundedWaitPool(pooled.PostgresConnectionPool):  # type: ignore[misc]
    """The library's pool with a bounded wait for a free connection, which checks only
    connections idle longer than ``check_idle_seconds``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.wait_seconds = float(kwargs.pop("POOL_TIMEOUT", 5.0))
        self.check_idle_seconds = float(kwargs.pop("POOL_CHECK_IDLE_SECONDS", 5.0))
        # id(connection) -> when it came back, for the connections in the pool now.
        self._returned_at: dict[int, float] = {}
        super().__init__(*args, **kwargs)

    def put(self, item: Any) -> None:
        self._returned_at[id(item)] = time.monotonic()
        super().put(item)
        if item.closed:  # the pool was full: the library closed it
            self._returned_at.pop(id(item), None)

    def _usable(self, conn: Any) -> bool:
        returned = self._returned_at.pop(id(conn), None)
        if conn.closed:
            return False
        if returned is not None and time.monotonic() - returned < self.check_idle_seconds:
            return True
        try:
            self.check_usable(conn)
        except self.DBERROR:
            return False
        return True

    def get(self) -> Any:
        conn = None
        try:
            if self.size >= self.maxsize or self.pool.qsize():
                conn = self.pool.get(timeout=self.wait_seconds)
            else:
                conn = self.pool.get_nowait()
        except queue.Empty:
            if self.size >= self.maxsize:
                raise psycopg2.OperationalError(
                    f"all {self.maxsize} database connections of this web process are busy"
                ) from None
        if conn is not None:
            if self._usable(conn):
                return conn
            self._conns.discard(conn)
        conn = self.create_connection()
        self._conns.add(conn)
        return conn


class DatabaseWrapper(pooled.DatabaseWrapper):  # type: ignore[misc]
    pool_class = BoundedWaitPool
