"""Tenants' webhook signing secrets: read the ones in force, rotate.

After a rotation the previous secret keeps signing for ``PREVIOUS_SECRET_VALIDITY``: every
webhook then carries two signatures (``v1,<new> v1,<old>``), which Standard Webhooks
verifiers accept, so receivers can switch at their own pace.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from timers.models import Tenant, new_webhook_secret

PREVIOUS_SECRET_VALIDITY = timedelta(hours=24)


@dataclass(frozen=True)
class SigningSecrets:
    current: str
    previous: str | None

    def all(self) -> list[str]:
        return [self.current] if self.previous is None else [self.current, self.previous]


# Workers sign thousands of webhooks a second in a burst; the tenant's secrets are read at
# most once per CACHE_SECONDS per process. A rotation reaches other processes within that time
# (the previous secret keeps signing for 24 h anyway) and this process at once.
CACHE_SECONDS = 2.0
_cache: dict[str, tuple[float, tuple[str, str, datetime | None]]] = {}
_cache_lock = threading.Lock()


def _secret_row(tenant_id: str) -> tuple[str, str, datetime | None]:
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(tenant_id)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    row = Tenant.objects.values_list("webhook_secret", "previous_webhook_secret", "webhook_secret_rotated_at").get(
        pk=tenant_id
    )
    with _cache_lock:
        _cache[tenant_id] = (now, row)
    return row


def secrets_cache_clear() -> None:
    with _cache_lock:
        _cache.clear()


def webhook_secrets_in_force(*, tenant_id: str, now: datetime | None = None) -> SigningSecrets:
    """The secrets a webhook of ``tenant_id`` is signed with now. Raises Tenant.DoesNotExist."""
    now = now or timezone.now()
    current, previous, rotated_at = _secret_row(tenant_id)
    keep_previous = bool(previous) and rotated_at is not None and now - rotated_at < PREVIOUS_SECRET_VALIDITY
    return SigningSecrets(current=current, previous=previous if keep_previous else None)


def tenant_webhook_secret_rotate(*, tenant_id: str) -> str:
    """Give the tenant a new signing secret and return it; the old one stays valid for 24 h.

    Rotating twice within 24 h drops the oldest secret: only the last two are ever in force.
    """
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=tenant_id)
        secret = new_webhook_secret()
        Tenant.objects.filter(pk=tenant.pk).update(
            previous_webhook_secret=tenant.webhook_secret,
            webhook_secret=secret,
            webhook_secret_rotated_at=timezone.now(),
        )
    with _cache_lock:
        _cache.pop(tenant_id, None)
    return secret
