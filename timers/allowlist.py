"""The per-tenant allow-list of action kinds (``Tenant.allowed_action_kinds``), at create time.

The rollout guard of the original guide ("tenant allow-lists when rolling out new
orchestration actions"): a tenant whose list is not empty may only use the kinds it names.
``timer_create`` refuses a bundle naming another kind, for every caller; each attempt checks
again (``actions.allowlist``), so taking a kind off the list also stops timers created before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from timers.models import Tenant

# A bundle nests escalations at most a few levels (actions.bundle); this bounds the walk of a
# hand-made bundle that was never parsed.
_MAX_DEPTH = 8


def allowed_kinds(tenant: Tenant) -> list[str]:
    """The kinds ``tenant`` may use; an empty list means every kind."""
    kinds = tenant.allowed_action_kinds
    return [k for k in kinds if isinstance(k, str)] if isinstance(kinds, list) else []


def kind_allowed(allowed: list[str], kind: str) -> bool:
    return not allowed or kind in allowed


def refusal_reason(*, tenant_id: str, kind: str, allowed: list[str]) -> str:
    return (
        f"kind '{kind[:32]}' is not allowed for tenant '{tenant_id}' (its allowed action kinds: {', '.join(allowed)})"
    )


def _bundle_kinds(action_bundle: Any) -> Iterator[tuple[str, Any]]:
    """``(path, kind)`` of every action of a stored bundle, escalations included."""
    actions = action_bundle.get("actions") if isinstance(action_bundle, dict) else None
    if not isinstance(actions, list):
        return
    for i, action in enumerate(actions):
        path, current, depth = f"actionBundle.actions[{i}]", action, 0
        while isinstance(current, dict) and depth < _MAX_DEPTH:
            yield f"{path}.kind", current.get("kind")
            escalation = current.get("escalation")
            if not isinstance(escalation, dict):
                break
            path, current, depth = f"{path}.escalation.escalatesTo", escalation.get("escalatesTo"), depth + 1


def bundle_refusal(*, tenant: Tenant, action_bundle: Any) -> tuple[str, str] | None:
    """``(field, reason)`` for the first action whose kind ``tenant`` may not use, else None."""
    allowed = allowed_kinds(tenant)
    if not allowed:
        return None
    for path, kind in _bundle_kinds(action_bundle):
        if isinstance(kind, str) and not kind_allowed(allowed, kind):
            return path, refusal_reason(tenant_id=tenant.id, kind=kind, allowed=allowed)
    return None
