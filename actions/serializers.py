"""Wire format (camelCase) of action runs and their attempts, shown in timer detail."""

from __future__ import annotations

from rest_framework import serializers

from actions.models import ActionAttempt, ActionRun


class ActionAttemptOutput(serializers.ModelSerializer[ActionAttempt]):
    # allow_null tells the OpenAPI schema which fields can be null (the JSON is the same).
    startedAt = serializers.DateTimeField(source="started_at")
    finishedAt = serializers.DateTimeField(source="finished_at", allow_null=True)
    httpStatus = serializers.IntegerField(source="http_status", allow_null=True)
    exitCode = serializers.IntegerField(source="exit_code", allow_null=True)
    durationMs = serializers.IntegerField(source="duration_ms", allow_null=True)
    outputExcerpt = serializers.CharField(source="output_excerpt")

    class Meta:
        model = ActionAttempt
        fields = [
            "number",
            "startedAt",
            "finishedAt",
            "outcome",
            "httpStatus",
            "exitCode",
            "durationMs",
            "error",
            "outputExcerpt",
        ]


class ActionRunOutput(serializers.ModelSerializer[ActionRun]):
    actionId = serializers.CharField(source="action_id")
    escalationLevel = serializers.IntegerField(source="escalation_level")
    escalatedFrom = serializers.CharField(source="escalated_from.action_id", default=None, allow_null=True)
    nextAttemptAt = serializers.DateTimeField(source="next_attempt_at", allow_null=True)
    lastError = serializers.CharField(source="last_error")
    resultSummary = serializers.CharField(source="result_summary")
    finishedAt = serializers.DateTimeField(source="finished_at", allow_null=True)
    attemptRecords = ActionAttemptOutput(source="attempt_records", many=True)

    class Meta:
        model = ActionRun
        fields = [
            "id",
            "actionId",
            "kind",
            "status",
            "attempts",
            "escalationLevel",
            "escalatedFrom",
            "nextAttemptAt",
            "lastError",
            "resultSummary",
            "finishedAt",
            "attemptRecords",
        ]
