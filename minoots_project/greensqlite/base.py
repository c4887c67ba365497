"""SQLite for the gevent web workers: waiting for the write lock without freezing the process.

SQLite lets one connection write at a time; a connection that wants to write while another holds
the lock waits inside the C library (the busy timeout), retrying with plain sleeps. gevent cannot
switch greenlets there, so in a gevent web worker that wait froze the whole process, including
the greenlet holding the lock, which then could never commit: two creates in one web process
deadlocked for the whole busy timeout and both got a 503.

This backend opens connections with no busy timeout, so SQLite reports a held lock at once
("database is locked"), and waits in Python instead, with gevent's sleep (``time.sleep`` is
patched), so the lock holder runs and commits meanwhile. It retries only where a retry is
exact: a statement run outside a transaction (nothing of it was applied) and the ``BEGIN`` of a
transaction (Django's IMMEDIATE transactions take the write lock there, so statements inside
a transaction never meet it). ``executemany`` outside a transaction runs inside one, so a lock
met half-way cannot leave half the rows written. The total wait is bounded by the ``timeout``
option, like SQLite's own; then the error is raised as before (the API answers 503).

``settings`` selects this backend only for SQLite in a process that gevent has patched (the web
workers); the Celery workers, beat and management commands are threads or processes, whose
waits in the C library block no one else, and keep Django's own backend.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django.db.backends.sqlite3 import base as sqlite_base

T = TypeVar("T")

_FIRST_PAUSE = 0.001
_LONGEST_PAUSE = 0.05


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == sqlite3.SQLITE_BUSY)
    return "database is locked" in str(exc)


def retry_while_locked(attempt: Callable[[], T], *, wait_seconds: float) -> T:
    """``attempt()`` again, pausing cooperatively, for as long as SQLite says another connection
    holds the lock, up to ``wait_seconds`` in all."""
    deadline = time.monotonic() + wait_seconds
    pause = _FIRST_PAUSE
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, _LONGEST_PAUSE)


class CooperativeCursor(sqlite_base.SQLiteCursorWrapper):
    """Django's cursor, retrying a statement that met another connection's lock where that is
    exact (see the module's docstring)."""

    wait_seconds: float = 30.0

    def _retryable(self, query: str) -> bool:
        return not self.connection.in_transaction or query.lstrip()[:5].upper() == "BEGIN"

    def execute(self, query: str, params: Any = None) -> Any:
        if not self._retryable(query):
            return super().execute(query, params)
        return retry_while_locked(
            lambda: super(CooperativeCursor, self).execute(query, params), wait_seconds=self.wait_seconds
        )

    def executemany(self, query: str, param_list: Iterable[Any]) -> Any:
        if self.connection.in_transaction:
            return super().executemany(query, param_list)
        rows = list(param_list)
        retry_while_locked(lambda: sqlite3.Cursor.execute(self, "BEGIN IMMEDIATE"), wait_seconds=self.wait_seconds)
        try:
            result = super().executemany(query, rows)
        except BaseException:
            self.connection.rollback()
            raise
        self.connection.commit()
        return result


class DatabaseWrapper(sqlite_base.DatabaseWrapper):
    def get_connection_params(self) -> dict[str, Any]:
        params: dict[str, Any] = super().get_connection_params()
        self.lock_wait_seconds = float(params.get("timeout", 30.0))
        params["timeout"] = 0
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        # Django's opening statements (PRAGMAs, the init_command) may meet a lock too.
        return retry_while_locked(
            lambda: super(DatabaseWrapper, self).get_new_connection(conn_params), wait_seconds=30.0
        )

    def create_cursor(self, name: str | None = None) -> Any:
        cursor = self.connection.cursor(factory=CooperativeCursor)
        cursor.wait_seconds = getattr(self, "lock_wait_seconds", 30.0)
        return cursor
