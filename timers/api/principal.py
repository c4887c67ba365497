"""Who is calling: a tenant with roles (API key or JWT) or a staff operator (session)."""

from __future__ import annotations

from dataclasses import dataclass, field

from timers.models import Role, Tenant

ALL_ROLES = frozenset(r.value for r in Role)


@dataclass(frozen=True)
class Principal:
    tenant: Tenant | None  # None only for staff sessions that did not pick a tenant
    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)
    via: str = "api_key"
    is_staff: bool = False

    # DRF and Django treat request.user as a user object.
    is_authenticated = True
    is_anonymous = False
    is_active = True

    def has_role(self, role: str) -> bool:
        return self.is_staff or role in self.roles or Role.TENANT_ADMIN in self.roles

    def __str__(self) -> str:
        return f"{self.via}:{self.subject}"
