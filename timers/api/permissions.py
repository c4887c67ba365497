"""Role checks: each view names the role it needs in ``required_role``."""

from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request

from timers.api.principal import Principal


class HasTenant(permissions.BasePermission):
    message = "Authentication required: send X-API-Key or Authorization: Bearer <JWT>"

    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.user
        if not isinstance(principal, Principal):
            return False
        header_tenant = request.headers.get("x-tenant-id")
        if header_tenant and principal.tenant is not None and header_tenant != principal.tenant.id:
            self.message = "x-tenant-id does not match the credential's tenant"
            return False
        role = getattr(view, "required_role", None)
        if role and not principal.has_role(role):
            self.message = f"This credential lacks the '{role}' role"
            return False
        return True
