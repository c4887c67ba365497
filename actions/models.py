"""Action runs (one per action of a fired timer) and their attempts."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q

from timers.models import Timer


class RunStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # Its timer was cancelled after it fired, before this run started (or before its retry).
    CANCELLED = "cancelled"


class ActionRun(models.Model):
    """One action of a timer's bundle. ``id`` doubles as the stable Standard Webhooks ``webhook-id``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Its lookups and the cascade read actionrun_timer_position (timer_id, position): no index of its own.
    timer = models.ForeignKey(Timer, on_delete=models.CASCADE, related_name="action_runs", db_index=False)
    action_id = models.CharField(max_length=100)
    kind = models.CharField(max_length=32)
    parameters = models.JSONField(default=dict)
    position = models.PositiveIntegerField(default=0)
    escalation_level = models.PositiveSmallIntegerField(default=0)
    escalated_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="escalations"
    )
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # Attempts made before the last operator retry (``actions.services.run_retry``): the retry
    # policy and the per-timer attempt cap count the attempts of the current chain only.
    retry_base = models.PositiveIntegerField(default=0)
    # The worker process (host:pid) that claimed the run, while it runs ("" when unknown): the
    # reconciler recovers the run once that process's heartbeat is gone (actions.holders).
    worker = models.CharField(max_length=200, blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    result_summary = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["timer", "escalation_level", "position"]
        indexes = [
            models.Index(fields=["timer", "position"], name="actionrun_timer_position"),
            models.Index(
                fields=["next_attempt_at"],
                name="actionrun_pending_next",
                condition=Q(status="pending"),
            ),
            models.Index(
                fields=["lease_expires_at"],
                name="actionrun_running_lease",
                condition=Q(status="running"),
            ),
            # The admin dashboard's "failed recently": newest failures first, failed runs only.
            models.Index(
                fields=["-finished_at"],
                name="actionrun_failed_finished",
                condition=Q(status="failed"),
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=[s.value for s in RunStatus]), name="actionrun_status_valid"),
            # Action ids are unique within a bundle, escalations included: this makes creating
            # an escalation run idempotent.
            models.UniqueConstraint(fields=["timer", "action_id"], name="actionrun_timer_action_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.action_id} ({self.kind}) of {self.timer_id}"


class AttemptOutcome(models.TextChoices):
    SUCCEEDED = "succeeded"
    TRANSIENT = "transient_failure"
    PERMANENT = "permanent_failure"


class ActionAttempt(models.Model):
    # Its lookups and the cascade read actionattempt_run_number_unique (run_id, number).
    run = models.ForeignKey(ActionRun, on_delete=models.CASCADE, related_name="attempt_records", db_index=False)
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=20, choices=AttemptOutcome.choices, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    output_excerpt = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "number"]
        constraints = [models.UniqueConstraint(fields=["run", "number"], name="actionattempt_run_number_unique")]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.run_id}"
