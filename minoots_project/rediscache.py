"""Django's Redis cache, with one connection pool and one ``redis.Redis`` client per Redis
server for the whole process.

Django keeps a cache object per thread, which under gevent means per greenlet: each client
connection of a web worker got its own connection pool, so its own Redis connections (up to
GUNICORN_WORKER_CONNECTIONS per process), and its ``get_client`` built a new ``redis.Redis``
around the pool on every call, which copies its response callbacks and costs about as much as
the round trip itself (a create makes three such calls: quota, tick marker, and its check).

A pool is thread- and greenlet-safe (each command takes a connection and gives it back; redis-py
starts afresh after a fork) and a ``redis.Redis`` holds no per-call state, so one of each per
server (and pool options) serves every thread, greenlet and cache object of the process.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

_SHARED: dict[tuple[str, str], Any] = {}  # (server, its pool options) -> its client
_LOCK = threading.Lock()


class _SharingClient(RedisCacheClient):
    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        django_client: Any = self  # its internals, which the stubs do not name
        server: str = django_client._servers[django_client._get_connection_pool_index(write)]
        shared_key = (server, repr(sorted(django_client._pool_options.items(), key=lambda kv: kv[0])))
        client = _SHARED.get(shared_key)
        if client is None:
            with _LOCK:
                client = _SHARED.get(shared_key)
                if client is None:
                    pool = django_client._pool_class.from_url(server, **django_client._pool_options)
                    client = _SHARED[shared_key] = django_client._client(connection_pool=pool)
        return client


class SharedPoolRedisCache(RedisCache):
    """``django.core.cache.backends.redis.RedisCache`` with its pools and clients shared by
    every cache object of the process (see above)."""

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = _SharingClient
