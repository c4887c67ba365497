"""Tenants, API keys, timers and their append-only event log.

A timer is born ``scheduled`` or ``armed`` in ``timers.services.timer_create``; after that
each change of ``Timer.status`` has exactly one function in ``timers.services``, which also
appends the event and counts the metric: ``timers_arm`` (scheduled -> armed), ``timers_fire``
(armed -> fired), ``timers_settle`` / ``timer_fail`` (fired -> settled / failed) and
``timer_cancel`` (-> cancelled). Nothing else assigns ``Timer.status``; the raw SQL they run
lives in ``timers.queries``.
"""

from __future__ import annotations

import secrets
import uuid
from base64 import b64encode
from typing import Any

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.backends.ddl_references import Statement
from django.db.models import Q


def new_webhook_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + b64encode(secrets.token_bytes(32)).decode()


def _default_max_active() -> int:
    return settings.MINOOTS_DEFAULT_MAX_ACTIVE_TIMERS


def _default_max_daily() -> int:
    return settings.MINOOTS_DEFAULT_MAX_CREATES_PER_DAY


class PostgresGinIndex(GinIndex):
    """A GIN index on Postgres and nothing on other databases: SQLite has no GIN, and what
    reads it there (``timers.selectors.timers_list``) filters another way."""

    def create_sql(self, model: Any, schema_editor: Any, using: str = "", **kwargs: Any) -> Any:
        if schema_editor.connection.vendor != "postgresql":
            return Statement("SELECT 1")  # the schema editor runs what it is given: run nothing
        return super().create_sql(model, schema_editor, using=using, **kwargs)

    def remove_sql(self, model: Any, schema_editor: Any, **kwargs: Any) -> Any:
        if schema_editor.connection.vendor != "postgresql":
            return Statement("SELECT 1")
        return super().remove_sql(model, schema_editor, **kwargs)


class Tenant(models.Model):
    id = models.SlugField(primary_key=True, max_length=64)
    name = models.CharField(max_length=200, blank=True)
    webhook_secret = models.CharField(max_length=100, default=new_webhook_secret, editable=False)
    previous_webhook_secret = models.CharField(max_length=100, blank=True, editable=False)
    webhook_secret_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    max_active_timers = models.PositiveIntegerField(default=_default_max_active)
    max_creates_per_day = models.PositiveIntegerField(default=_default_max_daily)
    # The rollout guard: the action kinds this tenant may use, a JSON list of kind names
    # (JSON, not an ArrayField, so SQLite keeps it too). Empty means every kind. Checked when a
    # timer is created (timers.allowlist) and again at each attempt (actions.allowlist).
    allowed_action_kinds = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.id


class Role(models.TextChoices):
    TIMER_READ = "timer.read"
    TIMER_WRITE = "timer.write"
    TIMER_CANCEL = "timer.cancel"
    TENANT_ADMIN = "tenant.admin"


def default_roles() -> list[str]:
    return [Role.TIMER_READ, Role.TIMER_WRITE, Role.TIMER_CANCEL]


class ApiKey(models.Model):
    """An API key; the raw key is ``mk_<prefix>_<secret>`` and only a SHA-256 of it is kept."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    roles = models.JSONField(default=default_roles)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.name or self.prefix}"


class TimerStatus(models.TextChoices):
    SCHEDULED = "scheduled"
    ARMED = "armed"
    FIRED = "fired"
    SETTLED = "settled"
    FAILED = "failed"
    CANCELLED = "cancelled"


PENDING_STATUSES = (TimerStatus.SCHEDULED, TimerStatus.ARMED)
TERMINAL_STATUSES = (TimerStatus.SETTLED, TimerStatus.FAILED, TimerStatus.CANCELLED)


def has_actions(action_bundle: Any) -> bool:
    """Whether a stored ``actionBundle`` asks for any action: the one rule deciding whether a
    fired timer settles at once or waits for its action runs."""
    return (
        isinstance(action_bundle, dict)
        and isinstance(action_bundle.get("actions"), list)
        and bool(action_bundle["actions"])
    )


class Timer(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: every index below but two starts with tenant_id, and on Postgres
    # Django would add a second one (varchar_pattern_ops); each costs every insert of a timer.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="timers", db_index=False)
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=TimerStatus.choices, default=TimerStatus.SCHEDULED)
    duration_ms = models.BigIntegerField()
    created_at = models.DateTimeField()
    fire_at = models.DateTimeField()
    requested_by = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    labels = models.JSONField(default=dict, blank=True)
    action_bundle = models.JSONField(null=True, blank=True)
    agent_binding = models.JSONField(null=True, blank=True)
    fired_at = models.DateTimeField(null=True, blank=True)
    lateness_ms = models.BigIntegerField(null=True, blank=True)
    settled_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.CharField(max_length=500, blank=True)
    cancelled_by = models.CharField(max_length=200, blank=True)
    failure_reason = models.TextField(blank=True)
    state_version = models.PositiveIntegerField(default=1)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001 (NULL = no key, outside the unique constraint)
    request_hash = models.CharField(max_length=64, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "-created_at", "-id"], name="timer_tenant_created"),
            # The admin's timer list over every tenant (and a staff caller's API list), newest first.
            models.Index(fields=["-created_at", "-id"], name="timer_created"),
            # A list filtered by status, in the list's order to the last key (the id breaks ties
            # of created_at: without it Postgres sorts every timer of the status for one page);
            # also the dashboard's counts per status.
            models.Index(fields=["tenant", "status", "-created_at", "-id"], name="timer_tenant_status_created"),
            models.Index(fields=["status", "-created_at", "-id"], name="timer_status_created"),
            # The list's exact name filter (``?name=``), in the list's order.
            models.Index(fields=["tenant", "name", "-created_at", "-id"], name="timer_tenant_name"),
            # The list's ``?label=key:value`` (``labels @> {key: value}``) and ``fireAfter`` /
            # ``fireBefore`` filters: these find the few timers that match without walking the
            # tenant's timers in the list's order (``timers.selectors.timers_list``).
            PostgresGinIndex(fields=["labels"], opclasses=["jsonb_path_ops"], name="timer_labels"),
            models.Index(fields=["tenant", "fire_at", "created_at", "id"], name="timer_tenant_fire_at"),
            # The reconciler and the claim only ever look at pending timers by fire_at: this
            # keeps their cost proportional to what is due, not to the whole table. The
            # dashboard reads overdue and due-soon timers through it too, and one tenant's
            # through the second one (any other index would walk the tenant's pending timers).
            models.Index(
                fields=["fire_at"],
                name="timer_pending_fire_at",
                condition=Q(status__in=["scheduled", "armed"]),
            ),
            models.Index(
                fields=["tenant", "fire_at"],
                name="timer_tenant_pending_fire_at",
                condition=Q(status__in=["scheduled", "armed"]),
            ),
            # The admin dashboard: the fires of the last hour / day with their lateness read
            # from the index alone.
            models.Index(
                fields=["fired_at", "lateness_ms", "tenant"],
                name="timer_fired_window",
                condition=Q(fired_at__isnull=False),
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=[s.value for s in TimerStatus]), name="timer_status_valid"),
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="timer_idempotency_key_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class TimerEvent(models.Model):
    """Append-only history of a timer: one row per transition or action outcome."""

    # Its lookups and the cascade read timerevent_timer_id (timer_id, id); a second index on
    # timer_id alone only cost every event insert.
    timer = models.ForeignKey(Timer, on_delete=models.CASCADE, related_name="events", db_index=False)
    kind = models.CharField(max_length=40)
    occurred_at = models.DateTimeField()
    state_version = models.PositiveIntegerField()
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["timer", "id"], name="timerevent_timer_id")]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} @ {self.occurred_at:%Y-%m-%d %H:%M:%S}"


class StreamLease(models.Model):
    """One open ``/api/timers/stream`` connection of a tenant, over every web process.

    Counting these caps a tenant's open streams (MINOOTS_STREAMS_PER_TENANT) wherever they are
    served. An open stream renews its lease while it runs and deletes it when it ends; a lease
    whose web process died expires on its own (``timers.streams``).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    opened_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["tenant", "expires_at"], name="streamlease_tenant_expiry")]

    def __str__(self) -> str:
        return f"stream of {self.tenant_id} until {self.expires_at:%Y-%m-%dT%H:%M:%SZ}"
