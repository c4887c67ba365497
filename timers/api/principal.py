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
        if self.is_staff:
            # Without a chosen tenant a staff session reads every tenant and may create only by
            # naming the tenant in the body; cancelling needs x-tenant-id / ?tenant=.
            return self.tenant is not None or role in (Role.TIMER_READ, Role.TIMER_WRITE)
        return role in self.roles or Role.TENANT_ADMIN in self.roles

    def __str__(self) -> str:
        return f"{self.via}:{self.subject}"
