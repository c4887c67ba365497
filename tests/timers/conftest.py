"""Fixtures for the API tests: clients per role and tenant, RS256 tokens, timer factories."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from rest_framework.test import APIClient

from tests.factories import api_client, make_api_key
from timers.models import Tenant

MakeClient = Callable[..., APIClient]
MakeToken = Callable[..., str]
CreateTimer = Callable[..., dict[str, Any]]


def _pem_pair() -> tuple[str, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


@pytest.fixture(scope="session")
def rsa_key_pair() -> tuple[str, str]:
    """(private PEM, public PEM) generated once per run: 2048-bit generation is the slow part."""
    return _pem_pair()


@pytest.fixture(scope="session")
def foreign_rsa_key_pair() -> tuple[str, str]:
    """A second pair whose public key the service does not trust."""
    return _pem_pair()


@pytest.fixture
def jwt_public_key(settings: Any, rsa_key_pair: tuple[str, str]) -> str:
    settings.JWT_PUBLIC_KEY = rsa_key_pair[1]
    settings.JWT_AUDIENCE = None
    settings.JWT_ISSUER = None
    return rsa_key_pair[1]


@pytest.fixture
def make_token(jwt_public_key: str, rsa_key_pair: tuple[str, str]) -> MakeToken:
    """Sign an RS256 token for tenant ``acme`` / subject ``agent-7``; override any claim."""

    def make(*, private_key: str | None = None, algorithm: str = "RS256", **claims: Any) -> str:
        payload: dict[str, Any] = {
            "sub": "agent-7",
            "tenant": "acme",
            "exp": datetime.now(UTC) + timedelta(minutes=5),
        }
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, private_key or rsa_key_pair[0], algorithm=algorithm)

    return make


@pytest.fixture
def make_client(tenant: Tenant) -> MakeClient:
    """An API client holding a fresh key for ``tenant`` (default: acme) with ``roles``."""

    def make(*, roles: list[str] | None = None, for_tenant: Tenant | None = None) -> APIClient:
        return api_client(api_key=make_api_key(tenant=for_tenant or tenant, name="fixture", roles=roles))

    return make


@pytest.fixture
def other_client(make_client: MakeClient, other_tenant: Tenant) -> APIClient:
    return make_client(for_tenant=other_tenant)


@pytest.fixture
def create_timer(client: APIClient) -> CreateTimer:
    """POST a valid timer (5 minutes ahead unless overridden) and return its JSON body."""

    def create(api: APIClient | None = None, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"name": "t", "duration": "5m", **fields}
        body = {k: v for k, v in body.items() if v is not None}
        response = (api or client).post("/api/timers", body, format="json")
        assert response.status_code == 201, response.content
        return response.json()

    return create
