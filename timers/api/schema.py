"""OpenAPI extensions: how each authentication class appears in /api/schema/ and /api/docs/,
the error body and the error statuses of each operation, and a postprocessing hook.

Imported by ``timers.api.views`` so the extensions are registered before a schema is built.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, inline_serializer
from rest_framework import serializers

from timers.api.examples import ANY_ERRORS

# Each class below registers itself through drf-spectacular's untyped
# OpenApiGeneratorExtension.__init_subclass__, hence the ignores on the class lines.


class ApiKeyScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "timers.api.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "header", "name": "X-API-Key"}


class JwtScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "timers.api.authentication.JwtAuthentication"
    name = "bearerJwt"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "RS256, verified with JWT_PUBLIC_KEY; claims: tenant, sub, exp, roles",
        }


class StaffSessionScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "timers.api.authentication.StaffSessionAuthentication"
    name = "staffSession"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME}


# --- The error body and which statuses each operation answers with it ------------------------


# The one error shape of timers.api.errors.error_body, a component of its own ("Error").
# Other keys may follow (a 429 adds limitType), hence no additionalProperties: false.
def error_serializer(**kwargs: Any) -> serializers.Serializer[Any]:
    """The Error component, as a response body or (``required=False``) a field of one."""
    return inline_serializer(
        "Error",
        {
            "message": serializers.CharField(),
            "details": serializers.JSONField(
                allow_null=True, help_text="the field errors of a 400 ({field: [messages]}), or null"
            ),
        },
        **kwargs,
    )


ERROR = error_serializer()

ERROR_DESCRIPTIONS = {
    400: "Invalid input: a body, parameter, header or cursor the API refuses",
    401: "No credential, or an invalid, revoked or expired one",
    403: "The credential lacks the operation's role, or names another tenant or subject",
    404: "No such timer for this tenant (other tenants' timers are 404 too), or an unknown ?format=",
    409: "A conflict with the timer's state or an earlier request",
    413: "Request body larger than the server accepts",
    429: "A limit of the tenant is reached: its quota of active or daily timers, or (the event stream) its open streams",
    503: "A dependency (the database) is down, or every slot is in use; retry after Retry-After seconds",
}

# Every operation authenticates, checks a role and reads the database; and any answers 404 to
# an unknown DRF ?format= (the URL format override).
_ALWAYS = (401, 403, 404, 503)

# A string that DRF's CharField (whitespace trimmed with str.strip, NUL refused) does not find
# blank: at least one character that is not Python whitespace. ECMA's \s lacks \x1c-\x1f and \x85.
NONBLANK = r"^[^\x00]*[^\s\x00\x1c-\x1f\x85][^\x00]*$"


def status_list_pattern(statuses: list[str]) -> str:
    """The ?status= the list accepts: comma-separated statuses, empty items and spaces ignored."""
    one = "(?:" + "|".join(statuses) + ")"
    return rf"^[ ,]*{one}(?: *,[ ,]*{one})*[ ,]*$"


# Answered by the HTTP server (gunicorn) before Django sees the request, so not in the Error
# shape: a page of HTML. Only a query string can make a request line this long.
URI_TOO_LONG = {
    414: OpenApiResponse(
        description="Request line longer than the HTTP server reads (gunicorn: 4094 bytes); its own answer"
    )
}


def error_responses(*codes: int, examples: dict[int, list[OpenApiExample]] | None = None) -> dict[Any, OpenApiResponse]:
    """``extend_schema(responses=...)`` entries: ``codes`` plus 401, 403, 404 and 503, each with
    the Error body, as application/json whatever the operation's other media types (the stream's),
    and examples: the operation's own (``examples``, by status) or those any operation can give."""
    chosen = {**ANY_ERRORS, **(examples or {})}
    return {
        (code, "application/json"): OpenApiResponse(
            ERROR, description=ERROR_DESCRIPTIONS[code], examples=chosen.get(code, [])
        )
        for code in sorted({*codes, *_ALWAYS})
    }


def _strict_components() -> dict[str, type[serializers.Serializer[Any]]]:
    """The request bodies that refuse unknown fields (StrictInput's subclasses), by component name."""
    from timers.api.serializers import StrictInput  # noqa: PLC0415 (this module is imported by views)

    found: dict[str, type[serializers.Serializer[Any]]] = {}
    todo = list(StrictInput.__subclasses__())
    while todo:
        cls = todo.pop()
        found[cls.__name__.removesuffix("Serializer")] = cls
        todo.extend(cls.__subclasses__())
    return found


def _strict_body(component: dict[str, Any], cls: type[serializers.Serializer[Any]]) -> None:
    """What a StrictInput body refuses beyond its fields' types: unknown fields, and blank
    strings in the string fields that do not allow blank (DRF trims them first)."""
    from timers.api.serializers import MAX_LABEL_KEY, MAX_LABEL_VALUE, MAX_LABELS  # noqa: PLC0415

    component["additionalProperties"] = False
    properties = component.get("properties", {})
    for name, field in cls().fields.items():
        prop = properties.get(name)
        if prop is None:
            continue
        if isinstance(field, serializers.CharField) and not field.allow_blank:
            prop.setdefault("minLength", 1)
            prop.setdefault("pattern", NONBLANK)
        if name == "labels":
            # TimerCreateInput.validate_labels; OpenAPI 3.0 has no propertyNames for the keys.
            prop.update(
                {
                    "maxProperties": MAX_LABELS,
                    "description": f"at most {MAX_LABELS} labels: keys of 1-{MAX_LABEL_KEY} characters"
                    f" without ':', string values of at most {MAX_LABEL_VALUE}",
                }
            )


def postprocess(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """POSTPROCESSING_HOOKS entry: what serializers and extend_schema cannot say.

    - ``additionalProperties: false`` on the bodies whose unknown fields are a 400;
    - a create names exactly one of ``duration`` and ``fireAt``;
    - no ``format`` query parameter;
    - the ``Retry-After`` header of every 503.
    """
    schemas = result.get("components", {}).get("schemas", {})
    for name, cls in _strict_components().items():
        # A PATCH body is drf-spectacular's "Patched" component (every field optional).
        for component in (name, f"Patched{name}"):
            if component in schemas:
                _strict_body(schemas[component], cls)
    item_key = schemas.get("TimerBatchItemInput", {}).get("properties", {}).get("idempotencyKey")
    if item_key is not None:
        # idempotency_key_problem: 1-200 printable ASCII characters, spaces too (not trimmed).
        item_key["pattern"] = "^[ -~]+$"
    batch = schemas.get("TimerBatchInput", {}).get("properties", {}).get("timers")
    if batch is not None:
        # BatchItemsField's own checks (the list's bounds are read at run time).
        batch.update({"minItems": 1, "maxItems": settings.MINOOTS_BATCH_MAX})
    for component in ("TimerCreateInput", "TimerBatchItemInput", "PatchedTimerRescheduleInput"):
        if component in schemas:
            # EXACTLY_ONE_WHEN: a create or a reschedule gives duration or fireAt, not both, not neither.
            schemas[component]["oneOf"] = [{"required": ["duration"]}, {"required": ["fireAt"]}]
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            # drf-spectacular lists DRF's ?format= override for a view with several renderers
            # (the stream's): it chooses nothing there (the stream is text/event-stream, its
            # errors JSON, whatever it says; an unknown one is the documented 404).
            operation["parameters"] = [
                p for p in operation.get("parameters", []) if (p.get("in"), p.get("name")) != ("query", "format")
            ]
            if not operation["parameters"]:
                del operation["parameters"]
            unavailable = operation.get("responses", {}).get("503")
            if unavailable is not None:
                unavailable.setdefault("headers", {})["Retry-After"] = {
                    "schema": {"type": "integer"},
                    "description": "seconds to wait before retrying",
                }
    return result


# One server-sent event of GET /api/timers/stream, as an SSE client parses it (the fields of the
# event, each a string): ``data`` is the JSON of a timer event (timerId, tenantId, name, kind,
# stateVersion, occurredAt, data). The stream also sends comments and a ``retry`` line.
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "the event id, for Last-Event-ID"},
        "event": {"type": "string", "description": "the timer event's kind (created, fired, ...)"},
        "data": {
            "type": "string",
            "description": "JSON: timerId, tenantId, name, kind, stateVersion, occurredAt, data, and the original "
            "control plane's envelope: eventType, occurredAtIso, event {type, timer}, envelopeId, dedupeKey, traceId",
        },
        "retry": {"type": "integer"},
    },
}
