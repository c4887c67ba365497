"""API keys: ``mk_<prefix>_<secret>``; only a SHA-256 of the whole key is stored."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from django.db import transaction
from django.utils import timezone

from timers import queries
from timers.models import ApiKey, Role, Tenant, default_roles

KEY_PREFIX = "mk_"
_PREFIX_RE = re.compile(r"[0-9a-f]{1,16}", re.ASCII)


def _hash(raw: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is enough (no password stretching).
    return hashlib.sha256(raw.encode()).hexdigest()


def api_key_create(*, tenant: Tenant, name: str = "", roles: list[str] | None = None) -> tuple[ApiKey, str]:
    """Create a key; return it with the raw key, which is never stored nor shown again."""
    roles = roles or default_roles()
    unknown = sorted(set(roles) - {r.value for r in Role})
    if unknown:
        raise ValueError(f"unknown roles: {', '.join(unknown)}; known: {', '.join(r.value for r in Role)}")
    prefix = secrets.token_hex(6)
    raw = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(tenant=tenant, name=name, prefix=prefix, key_hash=_hash(raw), roles=list(roles))
    return key, raw


def api_key_verify(*, raw: str) -> ApiKey | None:
    """The active key matching ``raw``, or None. Constant-time comparison of the hash."""
    if not raw.isascii():
        return None  # keys are ASCII; anything else cannot match (nor be hashed as UTF-8)
    parts = raw.split("_", 2)
    if len(parts) != 3 or f"{parts[0]}_" != KEY_PREFIX or not _PREFIX_RE.fullmatch(parts[1]):
        return None  # also keeps NUL and other junk away from the database query
    key = queries.api_key_with_tenant(parts[1])
    if key is None or key.revoked_at is not None:
        return None
    if not hmac.compare_digest(key.key_hash, _hash(raw)):
        return None
    now = timezone.now()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        # Throttled so a busy key does not turn every request into a write.
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key


@transaction.atomic
def tenant_get_or_create(*, tenant_id: str, name: str = "") -> tuple[Tenant, bool]:
    return Tenant.objects.get_or_create(pk=tenant_id, defaults={"name": name or tenant_id})


def api_key_revoke(*, key: ApiKey) -> bool:
    """Revoke ``key`` now: every later request with it is a 401. True if this call revoked it
    (False: it was revoked already, and keeps its first revocation time)."""
    revoked = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key.refresh_from_db(fields=["revoked_at"])
    return bool(revoked)
