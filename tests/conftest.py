"""Shared fixtures: tenants, keys, API clients and the broker, against real Postgres and Redis.

Rows come from ``tests.factories``; queued messages are read with ``tests.broker.queued_tasks``;
API errors are checked with ``tests.assertions.assert_error``; ports come from ``tests.net``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from rest_framework.test import APIClient

from actions.secrets import secrets_cache_clear
from tests.factories import api_client, make_api_key, make_tenant
from timers.models import Tenant


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """On SQLite the test database is a file beside DATABASE_URL's (``test_<name>``), not
    pytest-django's in-memory default, so the worker, beat and web subprocesses of the
    end-to-end tests open the very database the test writes (``tests.processes.database_url``).
    A WAL or shared-memory file left by a killed run would be replayed into the new database:
    remove them first."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.sqlite3" or db.get("TEST", {}).get("NAME"):
        return
    path = Path(db["NAME"]).resolve()
    test_path = path.with_name(f"test_{path.name}")
    for leftover in (test_path, *(test_path.with_name(test_path.name + s) for s in ("-wal", "-shm"))):
        leftover.unlink(missing_ok=True)
    db.setdefault("TEST", {})["NAME"] = str(test_path)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A ``postgres_only`` test run on SQLite fails (it would pass for the wrong reason):
    deselect it with ``-m "not postgres_only"``, as scripts/test.sh does."""
    marker = item.get_closest_marker("postgres_only")
    if marker is not None and settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        pytest.fail(
            f"postgres_only ({marker.kwargs.get('reason', '')}): run it on Postgres, or deselect it "
            "with -m 'not postgres_only'",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _clear_tick_markers() -> Iterator[None]:
    """Each test starts with an empty tick-marker cache (Redis db of the tests)."""
    cache.clear()
    secrets_cache_clear()  # tenants are re-created with new secrets in every test
    yield


@pytest.fixture
def tenant(db: Any) -> Tenant:
    return make_tenant(id="acme")


@pytest.fixture
def other_tenant(db: Any) -> Tenant:
    return make_tenant(id="globex")


@pytest.fixture
def api_key(tenant: Tenant) -> str:
    return make_api_key(tenant=tenant)


@pytest.fixture
def client(api_key: str) -> APIClient:
    return api_client(api_key=api_key)


@pytest.fixture
def anon_client() -> APIClient:
    return api_client()


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    """The test broker's Redis db, empty when the test starts (read it with ``tests.broker``)."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


from tests.processes import processes  # noqa: E402,F401  (fixture for end-to-end tests)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Expose the call outcome to fixtures (``processes`` prints logs of a failed test)."""
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
