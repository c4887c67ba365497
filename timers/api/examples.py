"""Request and response examples of the OpenAPI schema (/api/docs/, /api/redoc/).

Each is what the API really takes or answers (the messages are the services' own);
tests/timers/test_schema.py posts the request examples and compares the response examples'
fields with the serializers', so an example cannot drift from the API.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiExample

TIMER_ID = "7adb5363-d1d5-455b-94f1-9bc8ac41296e"


def _tomorrow_at(hour: int) -> str:
    """A fireAt a request example can really send: tomorrow (UTC) at ``hour``, when the schema is
    built (a fixed date would one day be past, or beyond MINOOTS_MAX_HORIZON)."""
    day = datetime.now(UTC).date() + timedelta(days=1)
    return f"{day.isoformat()}T{hour:02d}:00:00Z"


_WEBHOOK_BUNDLE: dict[str, Any] = {
    "actions": [
        {
            "id": "notify",
            "kind": "webhook",
            "parameters": {"url": "https://hooks.example.com/minoots", "method": "POST"},
        }
    ],
    "concurrency": 1,
    "retryPolicy": {"maxAttempts": 3, "backoffInitialMs": 1000, "backoffMultiplier": 2},
}

# A timer as GET / POST answer it: created at 12:00, due ten minutes later, armed.
TIMER: dict[str, Any] = {
    "id": TIMER_ID,
    "tenantId": "acme",
    "name": "deploy-check",
    "status": "armed",
    "durationMs": 600000,
    "createdAt": "2030-01-01T12:00:00.000000Z",
    "fireAt": "2030-01-01T12:10:00.000000Z",
    "requestedBy": "apikey:358975c4b70a",
    "metadata": {"pr": 42},
    "labels": {"team": "ci"},
    "actionBundle": _WEBHOOK_BUNDLE,
    "agentBinding": None,
    "firedAt": None,
    "settledAt": None,
    "cancelledAt": None,
    "cancelReason": None,
    "cancelledBy": None,
    "failureReason": None,
    "stateVersion": 2,
    "latenessMs": None,
    "jitterMs": None,
    "ecosystem": None,
}

SETTLED_TIMER: dict[str, Any] = {
    **TIMER,
    "status": "settled",
    "firedAt": "2030-01-01T12:10:00.004000Z",
    "settledAt": "2030-01-01T12:10:00.187000Z",
    "stateVersion": 4,
    "latenessMs": 4,
    "jitterMs": 4,
}

CANCELLED_TIMER: dict[str, Any] = {
    **TIMER,
    "status": "cancelled",
    "cancelledAt": "2030-01-01T12:05:00.000000Z",
    "cancelReason": "release moved to Friday",
    "cancelledBy": "apikey:358975c4b70a",
    "stateVersion": 3,
}

RESCHEDULED_TIMER: dict[str, Any] = {
    **TIMER,
    "status": "scheduled",
    "durationMs": 2400000,
    "fireAt": "2030-01-01T12:40:00.000000Z",
    "stateVersion": 3,
}

ACTION_RUN: dict[str, Any] = {
    "id": "c2b0d7e4-5f7a-4b8e-9d1c-0a6f3e2b9c81",
    "actionId": "notify",
    "kind": "webhook",
    "status": "succeeded",
    "attempts": 1,
    "escalationLevel": 0,
    "escalatedFrom": None,
    "nextAttemptAt": None,
    "lastError": "",
    "resultSummary": "HTTP 200",
    "finishedAt": "2030-01-01T12:10:00.180000Z",
    "attemptRecords": [
        {
            "number": 1,
            "startedAt": "2030-01-01T12:10:00.020000Z",
            "finishedAt": "2030-01-01T12:10:00.180000Z",
            "outcome": "succeeded",
            "httpStatus": 200,
            "exitCode": None,
            "durationMs": 160,
            "error": "",
            "outputExcerpt": '{"ok": true}',
        }
    ],
}

EVENTS: list[dict[str, Any]] = [
    {
        "id": 101,
        "kind": "created",
        "occurredAt": "2030-01-01T12:00:00.000000Z",
        "stateVersion": 1,
        "data": {"fireAt": "2030-01-01T12:10:00+00:00"},
    },
    {"id": 240, "kind": "armed", "occurredAt": "2030-01-01T12:09:02.000000Z", "stateVersion": 2, "data": {}},
    {"id": 251, "kind": "fired", "occurredAt": "2030-01-01T12:10:00.004000Z", "stateVersion": 3, "data": {}},
    {"id": 263, "kind": "settled", "occurredAt": "2030-01-01T12:10:00.187000Z", "stateVersion": 4, "data": {}},
]

# --- requests --------------------------------------------------------------------------------

CREATE_REQUESTS = [
    OpenApiExample(
        "In ten minutes, call a webhook",
        request_only=True,
        value={
            "name": "deploy-check",
            "duration": "10m",
            "labels": {"team": "ci"},
            "metadata": {"pr": 42},
            "actionBundle": _WEBHOOK_BUNDLE,
        },
    ),
    OpenApiExample(
        "At a given time, no action (watch it in the event stream)",
        request_only=True,
        value={"name": "standup", "fireAt": _tomorrow_at(9)},
    ),
]

BATCH_REQUESTS = [
    OpenApiExample(
        "Three timers, one of them retry-safe",
        request_only=True,
        value={
            "timers": [
                {"name": "reminder-1", "duration": "10m", "labels": {"team": "ci"}},
                {"name": "reminder-2", "duration": "20m", "idempotencyKey": "reminder-2-of-run-42"},
                {"name": "standup", "fireAt": _tomorrow_at(9)},
            ]
        },
    )
]

CANCEL_REQUESTS = [
    OpenApiExample("With a reason", request_only=True, value={"reason": "release moved to Friday"}),
    OpenApiExample("Without a body", request_only=True, value={}),
]

RESCHEDULE_REQUESTS = [
    OpenApiExample(
        "Forty minutes from now, only if unchanged since version 2",
        request_only=True,
        value={"duration": "40m", "stateVersion": 2},
    ),
    OpenApiExample("To a new time", request_only=True, value={"fireAt": _tomorrow_at(12)}),
]

# --- responses -------------------------------------------------------------------------------

CREATE_RESPONSES = [
    OpenApiExample("Created", response_only=True, status_codes=["201"], value=TIMER),
    OpenApiExample("Replayed (same Idempotency-Key and body)", response_only=True, status_codes=["200"], value=TIMER),
]

BATCH_RESPONSES = [
    OpenApiExample(
        "Created, replayed and refused timers",
        response_only=True,
        value={
            "results": [
                {"index": 0, "status": 201, "timer": TIMER},
                {"index": 1, "status": 200, "timer": {**TIMER, "id": "0b5b8f1e-2f8c-4c4e-9d0e-6f1d2a3b4c5d"}},
                {
                    "index": 2,
                    "status": 400,
                    "error": {"message": "duration: must be positive", "details": {"duration": ["must be positive"]}},
                },
            ]
        },
    )
]

LIST_RESPONSES = [
    OpenApiExample(
        "A page",
        response_only=True,
        value={
            "timers": [SETTLED_TIMER],
            "next": "http://127.0.0.1:8000/api/timers?cursor=cD0yMDMwLTAxLTAxKzEyJTNBMDAlM0EwMC4wMDAwMDAlMkIwMCUzQTAw",
            "previous": None,
        },
    )
]

DETAIL_RESPONSES = [
    OpenApiExample(
        "Settled, with its action run", response_only=True, value={**SETTLED_TIMER, "actionRuns": [ACTION_RUN]}
    )
]

CANCEL_RESPONSES = [OpenApiExample("Cancelled", response_only=True, value=CANCELLED_TIMER)]

RESCHEDULE_RESPONSES = [OpenApiExample("Rescheduled", response_only=True, value=RESCHEDULED_TIMER)]

EVENTS_RESPONSES = [OpenApiExample("A timer's history", response_only=True, value={"events": EVENTS})]

STREAM_RESPONSES = [
    OpenApiExample(
        "Events as they happen",
        response_only=True,
        media_type="text/event-stream",
        value=(
            "retry: 1000\n: connected\n\n"
            "id: 251\nevent: fired\n"
            f'data: {{"timerId": "{TIMER_ID}", "tenantId": "acme", "name": "deploy-check", "kind": "fired", '
            '"stateVersion": 3, "occurredAt": "2030-01-01T12:10:00.004000+00:00", "data": {}}\n\n'
        ),
    )
]


# --- errors, for schema.error_responses: the ones any operation can give, then per operation ----


def _error(summary: str, message: str, details: Any = None, **extra: Any) -> OpenApiExample:
    return OpenApiExample(summary, response_only=True, value={"message": message, "details": details, **extra})


def _field_error(summary: str, field: str, message: str) -> OpenApiExample:
    return _error(summary, f"{field}: {message}", {field: [message]})


ANY_ERRORS: dict[int, list[OpenApiExample]] = {
    401: [_error("No credential", "Authentication credentials were not provided.")],
    403: [_error("Another tenant named", "x-tenant-id does not match the credential's tenant")],
    404: [_error("Unknown ?format=", "Not found.")],
    413: [_error("Body too large", f"Request body exceeds {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes")],
    503: [_error("Database down", "Database unavailable; retry shortly")],
}

_NEITHER = "give exactly one of 'duration' or 'fireAt'"
_NOT_A_DURATION = "'soon' is not a duration; use e.g. '500ms', '30s', '5m', '2h', '1d', '1h30m', 'PT15M' or an integer of milliseconds"
TIMER_NOT_FOUND = [_error("Unknown timer", f"Timer {TIMER_ID} not found")]

CREATE_ERRORS: dict[int, list[OpenApiExample]] = {
    400: [
        _field_error("Neither duration nor fireAt", "duration", _NEITHER),
        _field_error("A duration the API cannot read", "duration", _NOT_A_DURATION),
    ],
    409: [
        _error(
            "Idempotency-Key reused with another body",
            "Idempotency-Key was already used with a different request body",
            {"idempotencyKey": "deploy-42", "timerId": TIMER_ID},
        )
    ],
    429: [_error("Active timers quota", "Tenant 'acme' has 1000000 active timers, its limit", limitType="burst")],
}

BATCH_ERRORS: dict[int, list[OpenApiExample]] = {
    400: [
        _field_error("An empty list", "timers", "must hold at least one timer"),
        _field_error("Too many timers", "timers", "at most 1000 timers per batch (MINOOTS_BATCH_MAX), not 1001"),
    ]
}

LIST_ERRORS: dict[int, list[OpenApiExample]] = {
    400: [
        _field_error(
            "Unknown status",
            "status",
            "unknown status 'done'; use one of scheduled, armed, fired, settled, failed, cancelled",
        )
    ]
}

DETAIL_ERRORS: dict[int, list[OpenApiExample]] = {404: TIMER_NOT_FOUND}

RESCHEDULE_ERRORS: dict[int, list[OpenApiExample]] = {
    400: [_field_error("Both duration and fireAt", "duration", _NEITHER)],
    404: TIMER_NOT_FOUND,
    409: [
        _error(
            "Stale state version",
            "Timer changed since state version 2 (now 3); read it again and retry",
            {"stateVersion": 3, "expected": 2},
        ),
        _error(
            "No longer pending",
            "Timer is cancelled; only a scheduled or armed timer can be rescheduled",
            {"status": "cancelled", "stateVersion": 3},
        ),
    ],
}

CANCEL_ERRORS: dict[int, list[OpenApiExample]] = {
    400: [_field_error("A reason that is not a string", "reason", "must be a string")],
    404: TIMER_NOT_FOUND,
    409: [
        _error(
            "Already fired",
            "Timer already fired; its actions are running and can no longer be cancelled",
            {"status": "fired"},
        )
    ],
}

STREAM_ERRORS: dict[int, list[OpenApiExample]] = {
    400: [_field_error("Not an event id", "after", "must be an event id (an integer from 0 to 9223372036854775807)")],
    429: [
        _error(
            "Open event streams",
            "Tenant acme already has 10 open event streams (MINOOTS_STREAMS_PER_TENANT); close one or retry later",
            limitType="streams",
        )
    ],
}
