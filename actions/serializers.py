"""Wire format (camelCase) of action runs and their attempts, shown in timer detail."""

from __future__ import annotations

from rest_framework import serializers

from actions.models import ActionAttempt, ActionRun


class ActionAttemptOutput(serializers.ModelSerializer[ActionAttempt]):
    startedAt = serializers.DateTimeField(source="started_at")
    finishedAt = serializers.DateTimeField(source="finished_at")
    httpStatus = serializers.IntegerField(source="http_status")
    exitCode = serializers.IntegerField(source="exit_code")
    durationMs = serializers.IntegerField(source="duration_ms")
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
    escalatedFrom = serializers.CharField(source="escalated_from.action_id", default=None)
    nextAttemptAt = serializers.DateTimeField(source="next_attempt_at")
    lastError = serializers.CharField(source="last_error")
    resultSummary = serializers.CharField(source="result_summary")
    finishedAt = serializers.DateTimeField(source="finished_at")
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
