"""API authentication: X-API-Key, Bearer JWT (RS256), and staff sessions for the browsable API."""

from __future__ import annotations

import math
from typing import Any

import jwt
from django.conf import settings
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from timers import keys, selectors
from timers.api.principal import ALL_ROLES, Principal
from timers.models import default_roles

# requestedBy / cancelledBy columns hold at most this many characters.
MAX_SUBJECT = 200


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Principal, Any] | None:
        raw = request.headers.get("X-API-Key")
        if raw is None:
            return None
        api_key = keys.api_key_verify(raw=raw.strip())
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key")
        principal = Principal(
            tenant=api_key.tenant,
            subject=f"apikey:{api_key.prefix}",
            roles=frozenset(api_key.roles),
            via="api_key",
        )
        return principal, api_key

    def authenticate_header(self, request: Request) -> str:
        return 'ApiKey header="X-API-Key"'


class JwtAuthentication(authentication.BaseAuthentication):
    """RS256 tokens verified with JWT_PUBLIC_KEY; ``tenant`` claim, ``sub`` becomes requestedBy."""

    def authenticate(self, request: Request) -> tuple[Principal, Any] | None:
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        token = header[7:].strip()
        if not settings.JWT_PUBLIC_KEY:
            raise exceptions.AuthenticationFailed("Bearer tokens are not enabled (JWT_PUBLIC_KEY is unset)")
        options: Any = {"require": ["exp", "sub"], "verify_aud": settings.JWT_AUDIENCE is not None}
        try:
            claims = jwt.decode(
                token,
                settings.JWT_PUBLIC_KEY,
                algorithms=["RS256"],
                audience=settings.JWT_AUDIENCE,
                issuer=settings.JWT_ISSUER,
                options=options,
            )
        except jwt.PyJWTError as exc:
            raise exceptions.AuthenticationFailed(f"Invalid bearer token: {exc}") from exc
        _check_time_claims(claims)
        tenant_id = claims.get("tenant")
        if not isinstance(tenant_id, str) or not tenant_id:
            raise exceptions.AuthenticationFailed("Bearer token has no 'tenant' claim")
        tenant = selectors.tenant_get(tenant_id=tenant_id)
        if tenant is None:
            raise exceptions.AuthenticationFailed(f"Unknown tenant '{tenant_id[:64]}'")
        subject = str(claims["sub"])
        if not 0 < len(subject) <= MAX_SUBJECT or not subject.isprintable():
            raise exceptions.AuthenticationFailed(f"Bearer token 'sub' must be 1-{MAX_SUBJECT} printable characters")
        principal = Principal(tenant=tenant, subject=subject, roles=_jwt_roles(claims), via="jwt")
        return principal, token


# RFC 7519 NumericDate claims; PyJWT applies int() to them, so it accepts "1999999999" and true.
TIME_CLAIMS = ("exp", "nbf", "iat")


def _check_time_claims(claims: dict[str, Any]) -> None:
    for name in TIME_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise exceptions.AuthenticationFailed(
                f"Invalid bearer token: the '{name}' claim must be a JSON number (seconds since the epoch)"
            )


def _jwt_roles(claims: dict[str, Any]) -> frozenset[str]:
    """No ``roles`` claim: the default roles. Present, it must be a list of strings (unknown
    names give nothing); anything else is refused, never widened to the defaults."""
    if "roles" not in claims:
        return frozenset(default_roles())
    roles = claims["roles"]
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise exceptions.AuthenticationFailed("Bearer token 'roles' claim must be a list of role names (strings)")
    return frozenset(r for r in roles if r in ALL_ROLES)


class StaffSessionAuthentication(authentication.SessionAuthentication):
    """A logged-in staff user (Django admin) acting on the tenant named by ``x-tenant-id``
    or ``?tenant=``; without one, a read-only operator view over every tenant."""

    def authenticate(self, request: Request) -> tuple[Principal, Any] | None:
        result = super().authenticate(request)
        if result is None:
            return None
        user = result[0]
        if not user.is_staff:
            raise exceptions.PermissionDenied("Only staff users may use the API with a session")
        tenant_id = request.headers.get("x-tenant-id") or request.query_params.get("tenant")
        tenant = None
        if tenant_id:
            tenant = selectors.tenant_get(tenant_id=tenant_id)
            if tenant is None:
                raise exceptions.NotFound(f"Unknown tenant '{tenant_id[:64]}'")
        principal = Principal(
            tenant=tenant, subject=f"staff:{user.get_username()}", roles=ALL_ROLES, via="session", is_staff=True
        )
        return principal, None
