"""GET /api/timers/stream: the caller's timer events as server-sent events.

Each event carries its TimerEvent id, so a client that reconnects with ``Last-Event-ID`` (as
browsers' EventSource do) misses nothing. A stream lasts MINOOTS_STREAM_MAX_SECONDS, then ends
so that no connection is held forever; clients reconnect.

An open stream costs its web worker a greenlet, not a thread (gevent workers, gunicorn_conf),
and gives its database connection back between polls, so open streams take nothing from other
requests. Two caps bound them: MINOOTS_STREAMS_PER_TENANT over every web process (a lease per
stream, ``timers.streams``; one more is a 429), and MINOOTS_STREAMS_PER_PROCESS per web process
(memory and polling; one more is a 503).
"""

from __future__ import annotations

import json
import logging
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import close_old_connections
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, renderers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from timers import selectors, streams
from timers.api import examples
from timers.api.browsable import Described
from timers.api.errors import mark_logged
from timers.api.principal import Principal
from timers.api.schema import SSE_EVENT, error_responses
from timers.models import Role, Tenant, TimerEvent
from timers.serializers import timers_wire

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15
BATCH = 500
MAX_EVENT_ID = 2**63 - 1


class EventStreamRenderer(renderers.BaseRenderer):
    media_type = "text/event-stream"
    format = "sse"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return f"event: error\ndata: {json.dumps(data)}\n\n".encode()


# Every kind of timer event, which ``?topic=`` chooses from (also as ``timer.<kind>``).
EVENT_KINDS = (
    "created",
    "armed",
    "rescheduled",
    "fired",
    "settled",
    "failed",
    "cancelled",
    "retried",
    "action.succeeded",
    "action.retrying",
    "action.failed",
    "action.escalated",
    "action.cancelled",
)
TOPICS = (*EVENT_KINDS, *(f"timer.{kind}" for kind in EVENT_KINDS))
_ENVELOPE_NAMESPACE = uuid.UUID("6b1f3c52-0d7e-4f51-9a8e-4d0c2b7a9e13")


def _format(event: TimerEvent, timer: dict[str, Any]) -> str:
    """One frame: this API's fields and, beside them, the original control plane's envelope
    (``eventType``, ``occurredAtIso``, ``event: {type, timer}``, ``envelopeId``, ``dedupeKey``,
    ``traceId``). ``timer`` is the timer as it is when the frame is sent."""
    event_type = f"timer.{event.kind}"
    occurred = event.occurred_at.isoformat()
    payload = {
        "timerId": str(event.timer_id),
        "tenantId": event.timer.tenant_id,
        "name": event.timer.name,
        "kind": event.kind,
        "stateVersion": event.state_version,
        "occurredAt": occurred,
        "data": event.data,
        "eventType": event_type,
        "occurredAtIso": occurred,
        "event": {"type": event_type, "timer": timer},
        # Stable across reconnects and replays: the same event always has the same envelope.
        "envelopeId": str(uuid.uuid5(_ENVELOPE_NAMESPACE, str(event.id))),
        "dedupeKey": f"{event.timer_id}:{event.state_version}:{event.kind}:{event.id}",
        "traceId": event.timer_id.hex,  # one trace per timer
    }
    return f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(payload)}\n\n"


def _frames(events: Sequence[TimerEvent]) -> list[str]:
    """The frames of a batch, each timer rendered once."""
    timers = {e.timer_id: e.timer for e in events}
    wire = {UUID(t["id"]): t for t in timers_wire(list(timers.values()))}
    return [_format(event, wire[event.timer_id]) for event in events]


def parse_topics(values: Sequence[str]) -> frozenset[str] | None:
    """The event kinds ``?topic=`` asks for (repeatable, comma-separated, ``fired`` or
    ``timer.fired``), None for every kind; a ValidationError naming an unknown one."""
    kinds: set[str] = set()
    for value in values:
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            if item not in TOPICS:
                raise exceptions.ValidationError(
                    {"topic": [f"unknown topic '{item[:60]}'; use event kinds: {', '.join(EVENT_KINDS)}"]}
                )
            kinds.add(item.removeprefix("timer."))
    return frozenset(kinds) or None


def client_gone_check(sock: socket.socket | None) -> Callable[[], bool]:
    """A check that the client has closed its connection (gunicorn's ``gunicorn.socket``), so
    that a stream ends, and frees its tenant's place, within a poll of the client leaving
    rather than at the next keepalive write. Without a socket (the test client): never."""

    def gone() -> bool:
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            # Readable with nothing to read is the peer's FIN; a request pipelined behind the
            # stream would be data, and is not a reason to stop.
            return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    return gone


def event_stream(
    tenant: Tenant | None,
    last_id: int,
    max_seconds: float,
    lease: UUID | None,
    client_gone: Callable[[], bool] = lambda: False,
    topics: Collection[str] | None = None,
) -> Iterator[str]:
    deadline = time.monotonic() + max_seconds
    quiet_since = time.monotonic()
    renew_at = time.monotonic() + streams.RENEW_SECONDS
    # The original's first line (": stream-start"), then this API's.
    yield ": stream-start\nretry: 1000\n: connected\n\n"
    try:
        while time.monotonic() < deadline:
            events = selectors.timer_events_after(tenant=tenant, after_id=last_id, limit=BATCH)
            if events:
                last_id = events[-1].id
            chosen = [e for e in events if topics is None or e.kind in topics]
            yield from _frames(chosen)
            if events:
                quiet_since = time.monotonic()
                continue
            if client_gone():
                return
            if lease is not None and time.monotonic() >= renew_at:
                if not streams.stream_lease_renew(lease):
                    return  # expired (this process stalled past it): the client reconnects
                renew_at = time.monotonic() + streams.RENEW_SECONDS
            if time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield ": keepalive\n\n"
            # Between polls the database connection goes back to the web process's pool (gevent
            # workers; elsewhere only an obsolete one is closed).
            close_old_connections()
            time.sleep(POLL_SECONDS)
    finally:
        close_old_connections()


_slots_lock = threading.Lock()
_slots_in_use = 0


class _Slot:
    """One of MINOOTS_STREAMS_PER_PROCESS: a bound on what one web process polls for, whatever
    the tenants."""

    def __init__(self) -> None:
        self.held = False

    def acquire(self) -> bool:
        global _slots_in_use
        with _slots_lock:
            if _slots_in_use >= settings.MINOOTS_STREAMS_PER_PROCESS:
                return False
            _slots_in_use += 1
            self.held = True
            return True

    def release(self) -> None:
        global _slots_in_use
        with _slots_lock:
            if self.held:
                _slots_in_use -= 1
                self.held = False


class _SlotStream:
    """The event iterator; Django closes it when the response ends, which frees the process
    slot and the tenant's lease even if the client went away before the first event."""

    def __init__(self, events: Iterator[str], slot: _Slot, lease: UUID | None) -> None:
        self.events = events
        self.slot = slot
        self.lease = lease

    def __iter__(self) -> _SlotStream:
        return self

    def __next__(self) -> str:
        return next(self.events)

    def close(self) -> None:
        try:
            close = getattr(self.events, "close", None)
            if close is not None:
                close()
        finally:
            self.slot.release()
            if self.lease is not None:
                streams.stream_lease_release(self.lease)


def _refused(status: int, message: str, event: str, principal: Principal, **extra: str) -> Response:
    # A capacity limit doing its job, not a server fault: one WARNING line here, and none at
    # ERROR from django.request (which logs every 5xx so).
    log.warning(message, extra={"event": event, "tenant": principal.tenant.id if principal.tenant else None})
    body = {"message": message, "details": None, **extra}
    return mark_logged(Response(body, status=status, headers={"Retry-After": "5"}))


class TimerStreamApi(Described, APIView):
    name = "Timer event stream"
    description = (
        "Server-sent events: every event of your tenant's timers as it happens (id, event kind, JSON data). "
        "Open it with EventSource or curl -N; it ends after a few minutes and the client reconnects with "
        "Last-Event-ID."
    )
    required_role = Role.TIMER_READ
    renderer_classes = [renderers.JSONRenderer, EventStreamRenderer]

    @extend_schema(
        summary="Follow timer events (server-sent events)",
        description=(
            "A `text/event-stream` of every event of your tenant's timers as it happens: `id` (the event id), "
            "`event` (its kind: `created`, `armed`, `fired`, `settled`, ...) and `data` (JSON: `timerId`, "
            "`tenantId`, `name`, `kind`, `stateVersion`, `occurredAt`, `data`). It starts with the events after "
            "now, or after `?after=<id>` / `Last-Event-ID` (what browsers' EventSource send on reconnect, so a "
            "reconnecting client misses nothing). A stream ends after `MINOOTS_STREAM_MAX_SECONDS` (300 s by "
            "default), with comments (`: keepalive`) while quiet; reconnect then. A tenant has at most "
            "`MINOOTS_STREAMS_PER_TENANT` streams open (429 with `limitType: streams`), a web process "
            "`MINOOTS_STREAMS_PER_PROCESS` (503 with `Retry-After`)."
        ),
        examples=examples.STREAM_RESPONSES,
        parameters=[
            OpenApiParameter(
                "after",
                {"type": "integer", "minimum": 0, "maximum": MAX_EVENT_ID},
                description="Start after this event id (default: events from now on)",
            ),
            OpenApiParameter(
                "topic",
                {"type": "array", "items": {"type": "string", "enum": list(TOPICS)}},
                description="Only these event kinds (repeatable or comma-separated; `fired` or `timer.fired`)",
            ),
            OpenApiParameter(
                "Last-Event-ID",
                {"type": "integer", "minimum": 0, "maximum": MAX_EVENT_ID},
                location=OpenApiParameter.HEADER,
            ),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                SSE_EVENT, description="Server-sent events, one per timer event"
            ),
            **error_responses(400, 429, examples=examples.STREAM_ERRORS),
        },
    )
    def get(self, request: Request) -> StreamingHttpResponse | Response:
        principal = request.user
        assert isinstance(principal, Principal)
        # Both are checked when both are given (the header wins): an invalid one is a 400,
        # not silently ignored.
        given = {
            name: value
            for name, value in (
                ("Last-Event-ID", request.headers.get("Last-Event-ID")),
                ("after", request.query_params.get("after")),
            )
            if value is not None
        }
        for raw in given.values():
            # An event id is a bigint: a larger one would fail in the database (SQLite cannot
            # even bind it), once the stream has started.
            if not (raw.isascii() and raw.isdecimal() and len(raw) <= 19 and int(raw) <= MAX_EVENT_ID):
                raise exceptions.ValidationError(
                    {"after": [f"must be an event id (an integer from 0 to {MAX_EVENT_ID})"]}
                )
        raw = given.get("Last-Event-ID", given.get("after"))
        topics = parse_topics(request.query_params.getlist("topic"))
        last_id = selectors.timer_event_latest_id() if raw is None else int(raw)
        slot = _Slot()
        if not slot.acquire():
            return _refused(
                503,
                f"Too many open event streams on this server (all {settings.MINOOTS_STREAMS_PER_PROCESS} "
                "of this process); retry later",
                "stream_refused",
                principal,
            )
        lease = None
        if principal.tenant is not None:
            try:
                lease = streams.stream_lease_acquire(tenant=principal.tenant, cap=settings.MINOOTS_STREAMS_PER_TENANT)
            except BaseException:
                slot.release()
                raise
            if lease is None:
                slot.release()
                return _refused(
                    429,
                    f"Tenant {principal.tenant.id} already has {settings.MINOOTS_STREAMS_PER_TENANT} open event "
                    "streams (MINOOTS_STREAMS_PER_TENANT); close one or retry later",
                    "stream_refused_tenant",
                    principal,
                    limitType="streams",
                )
        response = StreamingHttpResponse(
            _SlotStream(
                event_stream(
                    principal.tenant,
                    last_id,
                    settings.MINOOTS_STREAM_MAX_SECONDS,
                    lease,
                    client_gone_check(request.META.get("gunicorn.socket")),
                    topics,
                ),
                slot,
                lease,
            ),
            content_type="text/event-stream",
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
        return response
