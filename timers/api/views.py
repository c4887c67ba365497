"""Timer endpoints: validate with an input serializer, call one service, render with an output serializer."""

from __future__ import annotations

from datetime import UTC
from typing import Any
from uuid import UUID

from django.db.models import TextField
from django.db.models.functions import Cast, Coalesce, Length
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from actions import selectors as action_selectors
from actions.serializers import ActionRunOutput
from timers import selectors, services
from timers.api import examples
from timers.api.browsable import Described
from timers.api.errors import error_body, validation_error_body
from timers.api.parsers import SafeJSONParser
from timers.api.principal import Principal
from timers.api.schema import (
    NONBLANK,
    URI_TOO_LONG,
    error_responses,
    error_serializer,
    status_list_pattern,
)  # also registers the auth extensions
from timers.api.serializers import (
    MAX_IDEMPOTENCY_KEY,
    MAX_LABEL_VALUE,
    REGION_HEADER,
    TimerBatchInput,
    TimerBatchItemInput,
    TimerCancelInput,
    TimerCreateInput,
    TimerRescheduleInput,
    idempotency_key_problem,
    parse_rfc3339,
)
from timers.models import Role, Tenant, Timer, TimerStatus
from timers.serializers import TimerEventOutput, TimerOutput, timer_json


class TimerPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 500
    # However big its timers (metadata and actionBundle are 64 KiB each, agentBinding is bounded
    # only by the request size), a page is at most this much JSON, or one timer.
    max_page_bytes = 4 * 1024 * 1024
    envelope_bytes = 16 * 1024  # {"timers": [...], "next": <URL>, "previous": <URL>}

    # Per timer beyond its JSON columns (the other fields, the keys): an estimate's margin.
    row_overhead_bytes = 1024

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Any] | None:
        # First the sizes of the candidate timers, measured in the database (no big row is
        # loaded), to load only the timers that can fit MAX_PAGE_BYTES; bound_page then cuts
        # exactly on the rendered JSON.
        self._fitting: int | None = None
        self._fitting = self._timers_that_fit(queryset, request)
        return super().paginate_queryset(queryset, request, view)

    def _timers_that_fit(self, queryset: Any, request: Request) -> int:
        page_size = self.get_page_size(request)
        cursor = self.decode_cursor(request)
        offset, reverse, position = cursor if cursor is not None else (0, False, None)
        ordering: tuple[str, ...] = self.ordering
        if reverse:
            ordering = tuple(o[1:] if o.startswith("-") else f"-{o}" for o in ordering)
        window = queryset.order_by(*ordering)
        if position is not None:  # as DRF filters: this side of the cursor's created_at
            lookup = "gt" if reverse else "lt"
            window = window.filter(**{f"created_at__{lookup}": position})
        sizes = window.annotate(_json_size=_json_size()).values_list("_json_size", flat=True)
        budget = self.max_page_bytes - self.envelope_bytes
        fitting = 0
        for size in sizes[offset : offset + page_size]:
            budget -= (size or 0) + self.row_overhead_bytes
            if budget < 0 and fitting:
                break
            fitting += 1
        return max(fitting, 1)

    def get_page_size(self, request: Request) -> int:
        fitting: int | None = getattr(self, "_fitting", None)
        if fitting is not None:
            return min(fitting, self._requested_page_size(request))
        return self._requested_page_size(request)

    def _requested_page_size(self, request: Request) -> int:
        # DRF falls back to the default for a limit it cannot read (``limit=null``) and silently
        # caps a larger one: both hide a client's mistake, so 400 naming the parameter.
        raw = request.query_params.get(self.page_size_query_param or "limit")
        if raw is None:
            return self.page_size
        if not (raw.isascii() and raw.isdecimal() and len(raw) <= 4 and 1 <= int(raw) <= self.max_page_size):
            raise exceptions.ValidationError({"limit": [f"must be an integer from 1 to {self.max_page_size}"]})
        return int(raw)

    def decode_cursor(self, request: Request) -> Cursor | None:
        # DRF answers a bad cursor with 404; it is invalid input, so 400 naming the parameter.
        try:
            cursor = super().decode_cursor(request)
        except exceptions.NotFound as exc:
            raise _invalid_cursor() from exc
        if cursor is None or cursor.position is None:
            return cursor
        # DRF hands the decoded position to the ORM as it is: anything but the instant of a
        # ``created_at`` (what DRF itself encodes) would fail there, as a 500.
        position = _cursor_position(str(cursor.position))
        return cursor._replace(position=position)  # type: ignore[arg-type]  # stubs say int; DRF decodes a str

    def bound_page(self, data: list[Any]) -> list[Any]:
        """The serialized page cut to MAX_PAGE_BYTES of JSON, keeping the timers nearest the
        cursor (at least one); the links then continue right after the last timer kept.

        Cutting to ``k`` timers leaves the paginator exactly as DRF leaves it with a page size
        of ``k``: the page, its size, and the position of the first timer left out as the
        boundary in the direction of travel.
        """
        renderer = JSONRenderer()
        reverse = self.cursor is not None and self.cursor.reverse
        budget = self.max_page_bytes - self.envelope_bytes
        kept = 0
        for item in reversed(data) if reverse else data:
            budget -= len(renderer.render(item)) + 1  # and its comma
            if budget < 0 and kept:
                break
            kept += 1
        if kept == len(data):
            return data
        page = self.page
        assert page is not None and len(page) == len(data)
        self.page_size = kept
        if reverse:
            self.previous_position = self._get_position_from_instance(page[-kept - 1], self.ordering)
            self.page, data = page[-kept:], data[-kept:]
            self.has_previous = True
        else:
            self.next_position = self._get_position_from_instance(page[kept], self.ordering)
            self.page, data = page[:kept], data[:kept]
            self.has_next = True
        return data

    def get_paginated_response(self, data: Any) -> Response:
        return Response({"timers": data, "next": self.get_next_link(), "previous": self.get_previous_link()})


def _json_size() -> Any:
    """Characters of a timer's JSON columns as the database stores them (an estimate of their
    rendered size: Postgres' jsonb text has a space after each separator)."""
    parts = [
        Coalesce(Length(Cast(f, TextField())), 0) for f in ("metadata", "labels", "action_bundle", "agent_binding")
    ]
    total: Any = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def _invalid_cursor() -> exceptions.ValidationError:
    return exceptions.ValidationError({"cursor": ["invalid cursor; use the 'next' or 'previous' link"]})


def _cursor_position(raw: str) -> str:
    """The position of a cursor as DRF writes it, ``str()`` of an aware UTC datetime; a 400
    naming ``cursor`` for anything else (not a date and time, no offset, out of range)."""
    try:
        parsed = parse_datetime(raw)
        if parsed is None or parsed.tzinfo is None:
            raise ValueError(raw)
        return str(parsed.astimezone(UTC))
    except (ValueError, OverflowError) as exc:  # month 13, year 0, or beyond year 1-9999 in UTC
        raise _invalid_cursor() from exc


def _principal(request: Request) -> Principal:
    principal = request.user
    assert isinstance(principal, Principal)  # guaranteed by HasTenant
    return principal


def _get_timer_or_404(request: Request, timer_id: UUID, *, with_runs: bool = False) -> Timer:
    get = action_selectors.timer_get_with_runs if with_runs else selectors.timer_get
    timer = get(tenant=_principal(request).tenant, timer_id=timer_id)
    if timer is None:
        raise exceptions.NotFound(f"Timer {timer_id} not found")
    return timer


def _requested_by(principal: Principal, claimed: str | None) -> str:
    """Who acts: a JWT's subject is authoritative; an API key (shared by an agent fleet) may name
    the agent in ``requestedBy``."""
    if principal.via == "jwt" and claimed and claimed != principal.subject:
        raise exceptions.PermissionDenied("requestedBy does not match the token's subject")
    return claimed or principal.subject


class TimerDetailOutput(TimerOutput):
    actionRuns = ActionRunOutput(source="action_runs", many=True, read_only=True)

    class Meta(TimerOutput.Meta):
        fields = [*TimerOutput.Meta.fields, "actionRuns"]


ALL_TENANTS = "__all__"


class TimerListInput(serializers.Serializer[Any]):
    tenantId = serializers.CharField(required=False, max_length=64)
    status = serializers.CharField(required=False)
    name = serializers.CharField(required=False, max_length=200)
    fireAfter = serializers.CharField(required=False)
    fireBefore = serializers.CharField(required=False)

    def validate_status(self, value: str) -> list[str]:
        statuses = [s.strip() for s in value.split(",") if s.strip()]
        unknown = sorted(set(statuses) - set(TimerStatus.values))
        if unknown:
            raise serializers.ValidationError(
                f"unknown status '{unknown[0]}'; use one of {', '.join(TimerStatus.values)}"
            )
        return statuses

    def validate_fireAfter(self, value: str) -> Any:
        return parse_rfc3339(value)

    def validate_fireBefore(self, value: str) -> Any:
        return parse_rfc3339(value)


def _listed_tenant(principal: Principal, tenant_id: str | None) -> Tenant | None:
    """The tenant whose timers a list shows: the credential's (``tenantId`` may only name it, or
    ``__all__``, which means it too); a staff session without a tenant sees every tenant's, or
    the one ``tenantId`` names."""
    if principal.tenant is not None:
        if tenant_id not in (None, ALL_TENANTS, principal.tenant.id):
            raise exceptions.PermissionDenied("tenantId does not match the credential's tenant")
        return principal.tenant
    if tenant_id in (None, ALL_TENANTS):
        return None
    tenant = selectors.tenant_get(tenant_id=tenant_id)
    if tenant is None:
        raise exceptions.ValidationError({"tenantId": [f"no tenant '{tenant_id[:64]}'"]})
    return tenant


def _labels_filter(values: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for raw in values:
        key, sep, value = raw.partition(":")
        if not sep or not key:
            raise exceptions.ValidationError({"label": [f"'{raw[:100]}' must look like key:value"]})
        if "\x00" in raw:
            raise exceptions.ValidationError({"label": ["must not contain NUL characters"]})
        pairs.append((key, value))
    return pairs


def _region(request: Request) -> str | None:
    """The original clients' ``x-minoots-region`` header (label ``minoots.io/region``), or None."""
    region = (request.headers.get(REGION_HEADER) or "").strip()
    if not region:
        return None
    if len(region) > MAX_LABEL_VALUE or not region.isprintable():
        raise exceptions.ValidationError(
            {REGION_HEADER: [f"must be at most {MAX_LABEL_VALUE} printable characters (a label value)"]}
        )
    return region


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    problem = idempotency_key_problem(key)
    if problem:
        raise exceptions.ValidationError({"Idempotency-Key": [problem]})
    return key


class ApiView(Described, APIView):
    """Base of the timer endpoints: JSON bodies parsed without a way to cause a 500; a title and
    links in the browsable API (``Described``). Each method documents itself with its own
    ``extend_schema(summary=..., description=...)``: drf-spectacular would otherwise show this
    docstring as every operation's description."""

    parser_classes = [SafeJSONParser]


class TimerListCreateApi(ApiView):
    name = "Timers"
    description = (
        "Your tenant's timers, newest first, 50 a page (?limit= up to 500). Filter with ?status=armed,scheduled, "
        "?name=, ?label=key:value (repeatable), ?fireAfter= and ?fireBefore= (RFC 3339). POST a JSON body to "
        "create one: a name and a duration ('10m') or a fireAt. Open a timer at /api/timers/{id}."
    )
    pagination_class = TimerPagination

    def links(self) -> list[tuple[str, str]]:
        return [
            ("Pending", self.url("timer-list", {"status": "scheduled,armed"})),
            ("Failed", self.url("timer-list", {"status": "failed"})),
            ("Event stream", self.url("timer-stream")),
            ("API docs", reverse("docs")),
        ]

    def get_required_role(self) -> str:
        return Role.TIMER_WRITE if self.request.method == "POST" else Role.TIMER_READ

    @property
    def required_role(self) -> str:
        return self.get_required_role()

    @extend_schema(
        operation_id="timers_list",
        summary="List timers",
        description=(
            "Your tenant's timers, newest first, one page at a time: follow `next` (and `previous`) until it is "
            "null. Filters combine: `status` (comma-separated), `name` (exact), `label=key:value` (repeat it: "
            "all must match), and a `fireAt` range with `fireAfter` (inclusive) and `fireBefore` (exclusive). "
            "A page holds `limit` timers (50 by default, at most 500) and ends early before 4 MiB of JSON."
        ),
        examples=examples.LIST_RESPONSES,
        parameters=[
            OpenApiParameter(
                "status",
                {"type": "string", "pattern": status_list_pattern(TimerStatus.values)},
                description="Comma-separated statuses",
            ),
            OpenApiParameter(
                "tenantId",
                {"type": "string", "maxLength": 64, "pattern": NONBLANK},
                description=f"the original clients' filter: your own tenant or `{ALL_TENANTS}` (the same); "
                "another tenant is a 403",
            ),
            OpenApiParameter("name", {"type": "string", "maxLength": 200, "pattern": NONBLANK}),
            OpenApiParameter(
                "label",
                {"type": "array", "items": {"type": "string", "pattern": "^[^:\\x00]+:[^\\x00]*$"}},
                description="key:value, repeatable (all must match)",
            ),
            OpenApiParameter("fireAfter", {"type": "string", "format": "date-time"}, description="RFC 3339, inclusive"),
            OpenApiParameter(
                "fireBefore", {"type": "string", "format": "date-time"}, description="RFC 3339, exclusive"
            ),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": TimerPagination.max_page_size, "default": 50},
                description="Timers per page, at most; a page also ends before 4 MiB of JSON",
            ),
            OpenApiParameter("cursor", str),
        ],
        responses={
            200: inline_serializer(
                "TimerPage",
                {
                    "timers": TimerOutput(many=True),
                    "next": serializers.CharField(allow_null=True),
                    "previous": serializers.CharField(allow_null=True),
                },
            ),
            **error_responses(400, examples=examples.LIST_ERRORS),
            **URI_TOO_LONG,
        },
    )
    def get(self, request: Request) -> Response:
        params = TimerListInput(data=request.query_params.dict())
        params.is_valid(raise_exception=True)
        data = params.validated_data
        qs = selectors.timers_list(
            tenant=_listed_tenant(_principal(request), data.get("tenantId")),
            status=data.get("status"),
            name=data.get("name"),
            labels=_labels_filter(request.query_params.getlist("label")),
            fire_after=data.get("fireAfter"),
            fire_before=data.get("fireBefore"),
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(qs, request, view=self)
        assert page is not None  # a page size is always set
        return paginator.get_paginated_response(paginator.bound_page([timer_json(timer) for timer in page]))

    @extend_schema(
        operation_id="timers_create",
        summary="Create a timer",
        description=(
            'Schedule a timer for your tenant: `duration` from now (`"500ms"`, `"30s"`, `"10m"`, `"1h30m"`, '
            'ISO-8601 `"PT15M"` or milliseconds) or an RFC 3339 `fireAt`, exactly one, in the future and within '
            "the horizon (365 days by default). Its `actionBundle` says what happens when it fires (`webhook`, "
            "`command`, `file`, `slack`, `agent_prompt`), with a `retryPolicy`; `labels` (string map) and "
            "`metadata` (any object) travel with it. Answers 201 with the timer, `scheduled` or `armed` (due within the arm horizon). With an "
            "`Idempotency-Key` header a repeated request (same key, same body, within 24 h) answers 200 with "
            "the timer it created the first time; the same key with another body is a 409. Over the tenant's "
            "quota of active timers or creates per day: 429 with `limitType`."
        ),
        request=TimerCreateInput,
        examples=[*examples.CREATE_REQUESTS, *examples.CREATE_RESPONSES],
        responses={
            201: TimerOutput,
            200: TimerOutput,
            **error_responses(400, 409, 413, 429, examples=examples.CREATE_ERRORS),
        },
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                # 1-200 printable ASCII characters; not only spaces (HTTP strips them).
                {"type": "string", "pattern": f"^[!-~](?:[ -~]{{0,{MAX_IDEMPOTENCY_KEY - 2}}}[!-~])?$"},
                OpenApiParameter.HEADER,
                description="replay-safe create",
            ),
            OpenApiParameter(
                REGION_HEADER,
                {"type": "string", "maxLength": MAX_LABEL_VALUE},
                OpenApiParameter.HEADER,
                description="label minoots.io/region, unless the body's labels set it (the original clients send it)",
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        principal = _principal(request)
        tenant = self._tenant_for_create(principal, request.data)
        key = _idempotency_key(request)
        body = TimerCreateInput(tenant_id=tenant.id, region=_region(request))
        # is_valid's rules and errors, without DRF's per-field machinery for a plain body.
        data = body.validated_item(request.data)
        timer, created = services.timer_create(
            tenant=tenant,
            spec=body.spec_from(data, requested_by=_requested_by(principal, data.get("requestedBy"))),
            idempotency_key=key,
            fingerprint=services.request_fingerprint(request.data),
            refuse_past=True,  # a client's fireAt already past is an input error, not "now"
        )
        return Response(timer_json(timer), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @staticmethod
    def _tenant_for_create(principal: Principal, data: Any) -> Tenant:
        body_tenant = data.get("tenantId") if isinstance(data, dict) else None
        if principal.tenant is not None:
            if body_tenant not in (None, principal.tenant.id):
                raise exceptions.PermissionDenied("tenantId does not match the credential's tenant")
            return principal.tenant
        # A staff session without a chosen tenant names it in the body.
        tenant = selectors.tenant_get(tenant_id=body_tenant) if isinstance(body_tenant, str) else None
        if tenant is None:
            raise exceptions.ValidationError({"tenantId": ["staff sessions must name an existing tenant"]})
        return tenant


class TimerBatchCreateApi(ApiView):
    name = "Create timers in a batch"
    description = (
        'POST {"timers": [<create body>, ...]} to create up to MINOOTS_BATCH_MAX timers (1,000 by default) in '
        "one request; each may carry its own idempotencyKey. The answer lists each timer's status and timer "
        "or error, in the order sent."
    )
    required_role = Role.TIMER_WRITE

    def links(self) -> list[tuple[str, str]]:
        return [("All timers", self.url("timer-list")), ("API docs", reverse("docs"))]

    @extend_schema(
        operation_id="timers_create_batch",
        summary="Create timers in a batch",
        description=(
            "Create up to `MINOOTS_BATCH_MAX` timers (1,000 by default) in one request and one transaction: "
            '`{"timers": [<create body>, ...]}`. Each timer is checked with the rules of a single create and '
            "answered on its own, in `results`, in the order sent: `{index, status, timer}` for 201 (created) "
            "and 200 (an `idempotencyKey` replay), `{index, status, error}` for 400 (invalid), 403 (another "
            "tenant or subject named), 409 (the `idempotencyKey` was used with another body) and 429 (over the "
            "tenant's quota: the first timers that fit are created, the later ones refused, with `limitType`). "
            "A timer's `idempotencyKey` means what the `Idempotency-Key` header means for a single create "
            "(the same key with the same body replays it, even one a single create stored). The answer is 200 "
            "whenever the batch was processed, whatever each timer's status; a body that is not an object "
            "with a non-empty list of at most `MINOOTS_BATCH_MAX` timers is a 400 and creates nothing."
        ),
        request=TimerBatchInput,
        examples=[*examples.BATCH_REQUESTS, *examples.BATCH_RESPONSES],
        responses={
            200: inline_serializer(
                "TimerBatchResults",
                {
                    "results": inline_serializer(
                        "TimerBatchResult",
                        {
                            "index": serializers.IntegerField(help_text="the timer's position in the request"),
                            "status": serializers.ChoiceField(choices=[200, 201, 400, 403, 409, 429]),
                            "timer": TimerOutput(required=False, help_text="with 201 and 200"),
                            "error": error_serializer(required=False, help_text="with the other statuses"),
                        },
                        many=True,
                    )
                },
            ),
            **error_responses(400, 413, examples=examples.BATCH_ERRORS),
        },
        parameters=[
            OpenApiParameter(
                REGION_HEADER,
                {"type": "string", "maxLength": MAX_LABEL_VALUE},
                OpenApiParameter.HEADER,
                description="label minoots.io/region of every timer whose labels do not set it",
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        principal = _principal(request)
        envelope = TimerBatchInput(data=request.data)
        envelope.is_valid(raise_exception=True)
        tenant = TimerListCreateApi._tenant_for_create(principal, request.data)
        bodies: list[Any] = envelope.validated_data["timers"]
        item_input = TimerBatchItemInput(tenant_id=tenant.id, region=_region(request))
        results: list[dict[str, Any] | None] = [None] * len(bodies)
        items: list[services.BatchItem] = []
        positions: list[int] = []
        for index, body in enumerate(bodies):
            try:
                data = item_input.validated_item(body)
                # The batch's tenant: the credential's, or the one a staff session names.
                if data.get("tenantId") not in (None, tenant.id):
                    raise exceptions.PermissionDenied("tenantId does not match the credential's tenant")
                requested_by = _requested_by(principal, data.get("requestedBy"))
            except exceptions.ValidationError as exc:
                results[index] = {"index": index, "status": 400, "error": validation_error_body(exc.detail)}
                continue
            except exceptions.PermissionDenied as exc:
                results[index] = {"index": index, "status": 403, "error": error_body(str(exc.detail))}
                continue
            items.append(TimerBatchItemInput.batch_item_from(data, body, requested_by=requested_by))
            positions.append(index)
        outcomes = services.timers_create_batch(tenant=tenant, items=items, refuse_past=True)
        for index, outcome in zip(positions, outcomes, strict=True):
            if outcome.timer is not None:
                status_code = 201 if outcome.created else 200
                results[index] = {"index": index, "status": status_code, "timer": timer_json(outcome.timer)}
            else:
                assert outcome.error is not None
                error = outcome.error
                results[index] = {
                    "index": index,
                    "status": error.status_code,
                    "error": error_body(error.message, error.details, **error.extra),
                }
        return Response({"results": results})


def _etag(timer: Timer) -> str:
    return f'"{timer.state_version}"'


def _expected_version(request: Request, body_version: int | None) -> int | None:
    """The state version a change is guarded by: ``If-Match`` (the ETag a GET returned, quoted
    or not) and/or the body's ``stateVersion``; both given must agree."""
    raw = request.headers.get("If-Match")
    header_version = None
    if raw is not None:
        text = raw.strip().removeprefix("W/").strip('"')
        if not (text.isascii() and text.isdecimal() and 0 < len(text) <= 10):
            raise exceptions.ValidationError({"If-Match": ["must be the timer's stateVersion (its ETag)"]})
        header_version = int(text)
    if header_version is not None and body_version is not None and header_version != body_version:
        raise exceptions.ValidationError({"stateVersion": ["does not match the If-Match header"]})
    return header_version if header_version is not None else body_version


class TimerDetailApi(ApiView):
    name = "Timer"
    description = (
        "One timer with its action runs and their attempts. The ETag header is its stateVersion: send it as "
        "If-Match with a PATCH (fireAt or duration) to reschedule it while it is pending."
    )

    def links(self) -> list[tuple[str, str]]:
        return [
            ("Events", self.timer_url("timer-events")),
            ("Cancel", self.timer_url("timer-cancel")),
            ("All timers", self.url("timer-list")),
            ("API docs", reverse("docs")),
        ]

    def get_required_role(self) -> str:
        return Role.TIMER_WRITE if self.request.method == "PATCH" else Role.TIMER_READ

    @property
    def required_role(self) -> str:
        return self.get_required_role()

    @extend_schema(
        summary="Get a timer",
        description=(
            "The timer with its action runs (`actionRuns`: one per action of its bundle, escalations included, "
            "each with its attempts: outcome, HTTP status or exit code, duration, error, output excerpt). The "
            "`ETag` header is its `stateVersion`, for `If-Match` on a reschedule. Another tenant's timer is a 404."
        ),
        examples=examples.DETAIL_RESPONSES,
        responses={200: TimerDetailOutput, **error_responses(404, examples=examples.DETAIL_ERRORS)},
    )
    def get(self, request: Request, timer_id: UUID) -> Response:
        timer = _get_timer_or_404(request, timer_id, with_runs=True)
        return Response(TimerDetailOutput(timer).data, headers={"ETag": _etag(timer)})

    @extend_schema(
        operation_id="timers_reschedule",
        summary="Reschedule a pending timer",
        description=(
            "Move a scheduled or armed timer to a new `fireAt`, or to `duration` from now (exactly one; "
            "the same rules as on create). Guard it with `If-Match: <stateVersion>` (or a `stateVersion` "
            "field): a timer that changed since is a 409 naming its current version. A timer that is no "
            "longer pending (fired, settled, failed, cancelled) is a 409 too. Recorded as a `rescheduled` "
            "event (and `armed` when the new time is within the arming horizon)."
        ),
        request=TimerRescheduleInput,
        examples=[*examples.RESCHEDULE_REQUESTS, *examples.RESCHEDULE_RESPONSES],
        parameters=[
            OpenApiParameter(
                "If-Match",
                {"type": "string", "pattern": r'^(W/)?"?[0-9]{1,10}"?$'},
                location=OpenApiParameter.HEADER,
                description="the timer's stateVersion, as its ETag",
            )
        ],
        responses={200: TimerOutput, **error_responses(400, 404, 409, 413, examples=examples.RESCHEDULE_ERRORS)},
    )
    def patch(self, request: Request, timer_id: UUID) -> Response:
        principal = _principal(request)
        body = TimerRescheduleInput(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        if principal.tenant is not None and data.get("tenantId") not in (None, principal.tenant.id):
            raise exceptions.PermissionDenied("tenantId does not match the credential's tenant")
        expected = _expected_version(request, data.get("stateVersion"))
        timer = _get_timer_or_404(request, timer_id)
        timer = services.timer_reschedule(
            timer=timer,
            duration=data.get("duration"),
            fire_at=data.get("fireAt"),
            expected_version=expected,
            by=_requested_by(principal, data.get("requestedBy")),
            refuse_past=True,
        )
        return Response(timer_json(timer), headers={"ETag": _etag(timer)})


class TimerCancelApi(ApiView):
    name = "Cancel a timer"
    description = (
        'POST (an empty body, or {"reason": "..."}) to cancel this timer. A pending timer never fires; a fired '
        "one's retries and escalations are cancelled; a timer already settled, failed or cancelled is returned "
        "unchanged."
    )
    required_role = Role.TIMER_CANCEL

    def links(self) -> list[tuple[str, str]]:
        return [("The timer", self.timer_url("timer-detail")), ("Events", self.timer_url("timer-events"))]

    @extend_schema(
        summary="Cancel a timer",
        description=(
            "Cancel a timer, with an optional `reason` (recorded with who cancelled it). A `scheduled` or `armed` "
            "timer never fires. A `fired` timer's pending retries and escalations are cancelled, attempts already "
            "running finish and are recorded. Cancelling a timer that is already `settled`, `failed` or "
            "`cancelled` returns it unchanged (idempotent)."
        ),
        request=TimerCancelInput,
        examples=[*examples.CANCEL_REQUESTS, *examples.CANCEL_RESPONSES],
        responses={200: TimerOutput, **error_responses(400, 404, 409, 413, examples=examples.CANCEL_ERRORS)},
    )
    def post(self, request: Request, timer_id: UUID) -> Response:
        principal = _principal(request)
        body = TimerCancelInput(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        if principal.tenant is not None and data.get("tenantId") not in (None, principal.tenant.id):
            raise exceptions.PermissionDenied("tenantId does not match the credential's tenant")
        timer = _get_timer_or_404(request, timer_id)
        timer = services.timer_cancel(
            timer=timer, reason=data.get("reason", ""), by=_requested_by(principal, data.get("requestedBy"))
        )
        return Response(timer_json(timer))


class TimerEventsApi(ApiView):
    name = "Timer events"
    description = (
        "Everything that happened to this timer, oldest first: created, armed, fired, action attempts, settled."
    )
    required_role = Role.TIMER_READ

    def links(self) -> list[tuple[str, str]]:
        return [("The timer", self.timer_url("timer-detail")), ("Cancel", self.timer_url("timer-cancel"))]

    @extend_schema(
        summary="A timer's event log",
        description=(
            "Every transition of the timer, oldest first, each with its `stateVersion`: `created`, `rescheduled`, "
            "`armed`, `fired`, the action events (`action.succeeded`, `action.retrying`, `action.failed`), then "
            "`settled`, `failed` or `cancelled`. The same events arrive live on `GET /api/timers/stream`."
        ),
        examples=examples.EVENTS_RESPONSES,
        responses={
            200: inline_serializer("TimerEvents", {"events": TimerEventOutput(many=True)}),
            **error_responses(404, examples=examples.DETAIL_ERRORS),
        },
    )
    def get(self, request: Request, timer_id: UUID) -> Response:
        timer = _get_timer_or_404(request, timer_id)
        return Response({"events": TimerEventOutput(selectors.timer_events(timer=timer), many=True).data})
