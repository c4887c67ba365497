"""Leases of open event streams: a tenant's streams are capped over every web process.

A stream costs a web worker little (a greenlet, see gunicorn_conf), but each one polls the
database, so one tenant must not open them without bound, nor take the slots other tenants
need. Every open stream holds a ``StreamLease`` row: ``stream_lease_acquire`` counts the
tenant's live leases under a lock on the tenant row and refuses one beyond the cap; the stream
renews its lease every ``RENEW_SECONDS`` and deletes it when it ends. A lease left by a web
process that died expires ``LEASE_SECONDS`` after its last renewal, so a crash frees its slots
within a minute without anyone cleaning up.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from timers.models import StreamLease, Tenant

LEASE_SECONDS = 60.0
RENEW_SECONDS = 20.0


def stream_lease_acquire(*, tenant: Tenant, cap: int) -> UUID | None:
    """A new lease for one of ``tenant``'s streams, or None when it already has ``cap`` live ones."""
    now = timezone.now()
    with transaction.atomic():
        # Serialises the count and the insert of one tenant's streams (SQLite: IMMEDIATE
        # transactions serialise every writer anyway).
        Tenant.objects.select_for_update().filter(pk=tenant.pk).values_list("pk").first()
        StreamLease.objects.filter(tenant=tenant, expires_at__lt=now).delete()
        if StreamLease.objects.filter(tenant=tenant).count() >= cap:
            return None
        lease = StreamLease.objects.create(tenant=tenant, expires_at=now + timedelta(seconds=LEASE_SECONDS))
    return lease.pk


def stream_lease_renew(lease_id: UUID) -> bool:
    """Extend the lease; False when it is gone (expired and taken over by a new count)."""
    expires = timezone.now() + timedelta(seconds=LEASE_SECONDS)
    return StreamLease.objects.filter(pk=lease_id).update(expires_at=expires) == 1


def stream_lease_release(lease_id: UUID) -> None:
    StreamLease.objects.filter(pk=lease_id).delete()
