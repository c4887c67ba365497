"""The timer's JSON form (camelCase on the wire), for the API and for webhook bodies alike.

It lives in the domain, below the API, so workers render a timer without importing
``timers.api``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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


def timers_wire(timers: Sequence[Timer]) -> list[dict[str, Any]]:
    """The timers' JSON form as plain JSON values (what the API would answer), in one pass."""
    rendered: list[dict[str, Any]] = json.loads(JSONRenderer().render(TimerOutput(timers, many=True).data))
    return rendered
