"""Shared fixtures: tenants, keys and API clients against real Postgres and Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from actions.secrets import secrets_cache_clear
from timers import keys
from timers.models import Tenant


@pytest.fixture(autouse=True)
def _clear_tick_markers() -> Iterator[None]:
    """Each test starts with an empty tick-marker cache (Redis db of the tests)."""
    cache.clear()
    secrets_cache_clear()  # tenants are re-created with new secrets in every test
    yield


@pytest.fixture
def tenant(db: Any) -> Tenant:
    return Tenant.objects.create(id="acme", name="Acme")


@pytest.fixture
def other_tenant(db: Any) -> Tenant:
    return Tenant.objects.create(id="globex", name="Globex")


@pytest.fixture
def api_key(tenant: Tenant) -> str:
    _, raw = keys.api_key_create(tenant=tenant, name="test")
    return raw


@pytest.fixture
def client(api_key: str) -> APIClient:
    c = APIClient()
    c.credentials(HTTP_X_API_KEY=api_key)
    return c


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


from tests.processes import processes  # noqa: E402,F401  (fixture for end-to-end tests)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Expose the call outcome to fixtures (``processes`` prints logs of a failed test)."""
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
