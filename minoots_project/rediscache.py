"""Django's Redis cache, keeping one ``redis.Redis`` client per connection pool.

Django's ``RedisCacheClient.get_client`` builds a new ``redis.Redis`` around the pool on every
cache call; building one copies its response callbacks and costs about as much as the round
trip itself, and a create makes three such calls (quota, tick marker, and the marker's check).
A ``redis.Redis`` holds no per-call state (each command takes a connection from the pool and
gives it back), so one per pool serves every call. Django keeps a cache object (and with it its
pools) per thread, which under gevent means per greenlet: the reuse is per client connection
of a web worker, whose requests follow one another on one greenlet.
"""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient


class _ReusingClient(RedisCacheClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[Any, Any] = {}  # pool -> its client (pools live as long as this)

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        django_client: Any = self  # its internals, which the stubs do not name
        pool = django_client._get_connection_pool(write)
        client = self._clients.get(pool)
        if client is None:
            # Two threads may both build one here; either serves, and the last one stays.
            client = self._clients[pool] = django_client._client(connection_pool=pool)
        return client


class ReusingRedisCache(RedisCache):
    """``django.core.cache.backends.redis.RedisCache`` with one client per pool (see above)."""

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = _ReusingClient
