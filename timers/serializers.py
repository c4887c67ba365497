"""The timer's JSON form (camelCase on the wire), for the API and for webhook bodies alike.

It lives in the domain, below the API, so workers render a timer without importing
``timers.api``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer

from timers.ecosystem import ecosystem_schema, read_ecosystem
from timers.models import Timer, TimerEvent

# What the schema says of a method field that gives a string or, when empty, null.
NULLABLE_STRING = serializers.CharField(allow_null=True)


class TimerOutput(serializers.ModelSerializer[Timer]):
    # allow_null only tells the OpenAPI schema these can be null: a None is rendered as null
    # whatever the field says (Serializer.to_representation), so the JSON is the same.
    tenantId = serializers.CharField(source="tenant_id")
    durationMs = serializers.IntegerField(source="duration_ms")
    createdAt = serializers.DateTimeField(source="created_at")
    fireAt = serializers.DateTimeField(source="fire_at")
    requestedBy = serializers.CharField(source="requested_by")
    actionBundle = serializers.JSONField(source="action_bundle", allow_null=True)
    agentBinding = serializers.JSONField(source="agent_binding", allow_null=True)
    firedAt = serializers.DateTimeField(source="fired_at", allow_null=True)
    settledAt = serializers.DateTimeField(source="settled_at", allow_null=True)
    cancelledAt = serializers.DateTimeField(source="cancelled_at", allow_null=True)
    cancelReason = serializers.SerializerMethodField()
    cancelledBy = serializers.SerializerMethodField()
    failureReason = serializers.SerializerMethodField()
    stateVersion = serializers.IntegerField(source="state_version")
    latenessMs = serializers.IntegerField(source="lateness_ms", allow_null=True)
    # The original control plane's name for the same number.
    jitterMs = serializers.IntegerField(
        source="lateness_ms", allow_null=True, help_text="firedAt - fireAt (latenessMs)"
    )
    ecosystem = serializers.SerializerMethodField()

    class Meta:
        model = Timer
        fields = [
            "id",
            "tenantId",
            "name",
            "status",
            "durationMs",
            "createdAt",
            "fireAt",
            "requestedBy",
            "metadata",
            "labels",
            "actionBundle",
            "agentBinding",
            "firedAt",
            "settledAt",
            "cancelledAt",
            "cancelReason",
            "cancelledBy",
            "failureReason",
            "stateVersion",
            "latenessMs",
            "jitterMs",
            "ecosystem",
        ]

    @extend_schema_field(NULLABLE_STRING)
    def get_cancelReason(self, obj: Timer) -> str | None:
        return obj.cancel_reason or None

    @extend_schema_field(NULLABLE_STRING)
    def get_cancelledBy(self, obj: Timer) -> str | None:
        return obj.cancelled_by or None

    @extend_schema_field(NULLABLE_STRING)
    def get_failureReason(self, obj: Timer) -> str | None:
        return obj.failure_reason or None

    @extend_schema_field(ecosystem_schema())
    def get_ecosystem(self, obj: Timer) -> dict[str, Any] | None:
        """``metadata.ecosystem`` when it is a valid ecosystem block (as the original returns it)."""
        return read_ecosystem(obj.metadata)


class TimerEventOutput(serializers.ModelSerializer[TimerEvent]):
    occurredAt = serializers.DateTimeField(source="occurred_at")
    stateVersion = serializers.IntegerField(source="state_version")

    class Meta:
        model = TimerEvent
        fields = ["id", "kind", "occurredAt", "stateVersion", "data"]


def _wire_datetime(value: datetime | None) -> str | None:
    """As DRF's DateTimeField renders it (settings: ISO 8601, UTC): ``isoformat`` with ``Z``."""
    if value is None:
        return None
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def timer_json(timer: Timer) -> dict[str, Any]:
    """``TimerOutput(timer).data`` without DRF's per-field machinery (a tenth of its time), for
    answers that render many timers at once (the batch create); tests keep the two equal."""
    return {
        "id": str(timer.id),
        "tenantId": timer.tenant_id,
        "name": timer.name,
        "status": str(timer.status),
        "durationMs": timer.duration_ms,
        "createdAt": _wire_datetime(timer.created_at),
        "fireAt": _wire_datetime(timer.fire_at),
        "requestedBy": timer.requested_by,
        "metadata": timer.metadata,
        "labels": timer.labels,
        "actionBundle": timer.action_bundle,
        "agentBinding": timer.agent_binding,
        "firedAt": _wire_datetime(timer.fired_at),
        "settledAt": _wire_datetime(timer.settled_at),
        "cancelledAt": _wire_datetime(timer.cancelled_at),
        "cancelReason": timer.cancel_reason or None,
        "cancelledBy": timer.cancelled_by or None,
        "failureReason": timer.failure_reason or None,
        "stateVersion": timer.state_version,
        "latenessMs": timer.lateness_ms,
        "jitterMs": timer.lateness_ms,
        "ecosystem": read_ecosystem(timer.metadata),
    }


def timers_wire(timers: Sequence[Timer]) -> list[dict[str, Any]]:
    """The timers' JSON form as plain JSON values (what the API would answer), in one pass."""
    rendered: list[dict[str, Any]] = json.loads(JSONRenderer().render(TimerOutput(timers, many=True).data))
    return rendered
