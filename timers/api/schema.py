"""OpenAPI extensions: how each authentication class appears in /api/schema/ and /api/docs/.

Imported by ``timers.api.views`` so the extensions are registered before a schema is built.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension

# Each class below registers itself through drf-spectacular's untyped
# OpenApiGeneratorExtension.__init_subclass__, hence the ignores on the class lines.


class ApiKeyScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "timers.api.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "header", "name": "X-API-Key"}


class JwtScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "timers.api.authentication.JwtAuthentication"
    name = "bearerJwt"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "RS256, verified with JWT_PUBLIC_KEY; claims: tenant, sub, exp, roles",
        }


class StaffSessionScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "timers.api.authentication.StaffSessionAuthentication"
    name = "staffSession"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME}
