"""Postgres for the gevent web workers: a bounded pool of connections shared by greenlets.

gunicorn serves the API with gevent workers (``gunicorn_conf``): one greenlet per client
connection, so a slow or idle client costs no thread. Django keeps one database connection per
thread, and under gevent a "thread" is a greenlet; without a pool every open client connection
could hold its own Postgres connection. django-db-geventpool's backend (psycopg2 made
cooperative by psycogreen, patched in ``gunicorn_conf.post_fork``) lends each request a
connection from a pool of ``MAX_CONNS`` per process and takes it back when the request ends
(``CONN_MAX_AGE`` 0: Django's "close" returns it), so the number of connections is bounded
whatever the number of clients.

One change to the library: its pool waits forever for a free connection once ``MAX_CONNS``
are lent. Here a request waits at most ``POOL_TIMEOUT`` seconds and then fails with
``OperationalError``, which the API answers as a 503 with Retry-After, like a database
outage, instead of hanging its client.

``settings`` selects this backend only in a process that gevent has patched (the web
workers); the Celery workers, beat and management commands keep Django's own backend.
"""

from __future__ import annotations

from typing import Any

import psycopg2
from django_db_geventpool.backends.postgresql_psycopg2 import base as pooled
from gevent import queue


class BoundedWaitPool(pooled.PostgresConnectionPool):  # type: ignore[misc]
    """The library's pool with a bounded wait for a free connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.wait_seconds = float(kwargs.pop("POOL_TIMEOUT", 5.0))
        super().__init__(*args, **kwargs)

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
            try:
                self.check_usable(conn)
                return conn
            except self.DBERROR:
                self._conns.discard(conn)
        conn = self.create_connection()
        self._conns.add(conn)
        return conn


class DatabaseWrapper(pooled.DatabaseWrapper):  # type: ignore[misc]
    pool_class = BoundedWaitPool
