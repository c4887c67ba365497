"""The gevent web workers' Postgres pool (minoots_project/greendb): which lent connections it
checks with a query first."""

from __future__ import annotations

from typing import Any

import psycopg2
import pytest

from minoots_project.greendb.base import BoundedWaitPool


class FakeConnection:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed = 1


class CountingPool(BoundedWaitPool):
    """The pool with connections that are only objects, and a check that counts (or fails)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(MAX_CONNS=2, **kwargs)
        self.created = 0
        self.checked = 0
        self.check_fails = False

    def create_connection(self) -> FakeConnection:
        self.created += 1
        return FakeConnection()

    def check_usable(self, connection: Any) -> None:
        self.checked += 1
        if self.check_fails:
            raise psycopg2.OperationalError("server closed the connection unexpectedly")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr("minoots_project.greendb.base.time.monotonic", lambda: now[0])
    return now


def test_a_connection_returned_moments_ago_is_lent_again_without_a_query(clock: list[float]) -> None:
    pool = CountingPool(POOL_CHECK_IDLE_SECONDS=5)
    conn = pool.get()
    pool.put(conn)
    clock[0] += 4.9
    assert pool.get() is conn
    assert pool.checked == 0
    assert pool.created == 1


def test_a_connection_idle_longer_than_the_limit_is_checked_first(clock: list[float]) -> None:
    pool = CountingPool(POOL_CHECK_IDLE_SECONDS=5)
    conn = pool.get()
    pool.put(conn)
    clock[0] += 5.1
    assert pool.get() is conn
    assert pool.checked == 1


def test_an_idle_connection_that_fails_its_check_is_replaced(clock: list[float]) -> None:
    pool = CountingPool(POOL_CHECK_IDLE_SECONDS=5)
    conn = pool.get()
    pool.put(conn)
    clock[0] += 60
    pool.check_fails = True
    fresh = pool.get()
    assert fresh is not conn
    assert pool.created == 2
    assert conn not in pool._conns


def test_a_connection_known_closed_is_replaced_without_a_query(clock: list[float]) -> None:
    pool = CountingPool(POOL_CHECK_IDLE_SECONDS=5)
    conn = pool.get()
    pool.put(conn)
    conn.close()
    fresh = pool.get()
    assert fresh is not conn
    assert pool.checked == 0
