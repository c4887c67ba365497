"""The per-tenant allow-list of action kinds, again at each attempt (see ``timers.allowlist``).

A kind taken off a tenant's list after its timers were created must not run for them: the
attempt fails for good, saying so, as a command taken off MINOOTS_COMMAND_ALLOWLIST does.
"""

from __future__ import annotations

from timers.allowlist import kind_allowed, refusal_reason
from timers.models import Tenant


def attempt_refusal(*, tenant_id: str, kind: str) -> str | None:
    """Why an attempt of ``kind`` for ``tenant_id`` may not run now, or None when it may.

    One primary-key read per attempt: the list is read when the attempt starts, so a change in
    the admin applies to the next attempt on every worker."""
    stored = Tenant.objects.filter(pk=tenant_id).values_list("allowed_action_kinds", flat=True).first()
    allowed = [k for k in stored if isinstance(k, str)] if isinstance(stored, list) else []
    if kind_allowed(allowed, kind):
        return None
    return refusal_reason(tenant_id=tenant_id, kind=kind, allowed=allowed) + "; the kind was taken off the list"
