"""The cache's Redis connections are the process's, not each thread's (or greenlet's)."""

from __future__ import annotations

import threading
from typing import Any

from django.core.cache import caches

from minoots_project.rediscache import SharedPoolRedisCache


def test_every_thread_uses_the_same_redis_client_and_pool_though_each_has_its_own_cache_object() -> None:
    seen: list[tuple[Any, Any]] = []

    def look() -> None:
        backend: Any = caches["default"]  # one per thread: Django's cache handler is thread-local
        assert isinstance(backend, SharedPoolRedisCache)
        backend.set("rediscache-test", "x", 5)
        seen.append((backend, backend._cache.get_client(write=True)))

    threads = [threading.Thread(target=look) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(seen) == 5
    assert len({id(backend) for backend, _ in seen}) == 5
    clients = {id(client) for _, client in seen}
    assert len(clients) == 1
    assert len({id(client.connection_pool) for _, client in seen}) == 1
    assert caches["default"].get("rediscache-test") == "x"
