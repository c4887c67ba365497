"""MinootsClient: the MINOOTS REST API for agents and scripts, sync and async.

Every method has an ``_async`` twin. Errors are typed (``minoots_agent_tools.errors``). A create
carries an ``Idempotency-Key`` (a new UUID per call unless one is given), the same on each of its
retries, so a retry after a lost answer gets the stored timer back instead of a second timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from minoots_agent_tools._http import (
    Call,
    SSEParser,
    StreamEvent,
    retry_after_seconds,
    retry_delay_after_error,
    retry_delay_after_response,
)
from minoots_agent_tools.batch import BATCH_MAX, TIMER_REQUEST_FIELDS, BatchResult, TimerRequest, batch_results
from minoots_agent_tools.errors import MinootsError, TimerWaitTimeout, Unavailable, error_for

Timer = dict[str, Any]

TERMINAL_STATUSES = frozenset({"settled", "failed", "cancelled"})
# What wait_for_timer asks the stream for (``?topic=``; a server that ignores it sends every kind).
_END_TOPICS = ("settled", "failed", "cancelled")
REGION_LABEL = "minoots.io/region"
REGION_HEADER = "x-minoots-region"

# The server sends a comment every 15 s on a quiet stream: a read waiting longer means the
# connection is dead.
STREAM_READ_TIMEOUT = 30.0

Duration = str | int | timedelta
Timestamp = str | datetime


class _StreamUnusable(Exception):
    """The event stream could not be opened (refused, unreachable): poll instead."""


class MinootsClient:
    """A client of one tenant of a MINOOTS server.

    ``base_url`` is the API root, ending in ``/api`` (``http://127.0.0.1:8000/api``). Give your
    own ``httpx.Client`` / ``httpx.AsyncClient`` to control connection pools, proxies or TLS;
    the client then neither configures nor closes them. ``max_retries`` bounds the retries of
    one request (connection errors, 429 with ``Retry-After``, 503).
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        tenant_id: str,
        default_region: str | None = None,
        default_requested_by: str = "agent:minoots",
        timeout: float = 10.0,
        sync_client: httpx.Client | None = None,
        async_client: httpx.AsyncClient | None = None,
        max_retries: int = 3,
    ) -> None:
        if not base_url:
            raise ValueError("base_url is required (the API root, e.g. http://127.0.0.1:8000/api)")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.tenant_id = tenant_id
        self.default_region = default_region
        self.default_requested_by = default_requested_by
        self.timeout = timeout
        self.max_retries = max_retries
        self._sync_client = sync_client
        self._async_client = async_client
        self._owns_sync = sync_client is None
        self._owns_async = async_client is None

    @classmethod
    def from_env(cls, **overrides: Any) -> MinootsClient:
        """A client configured by ``MINOOTS_API_URL``, ``MINOOTS_API_KEY``, ``MINOOTS_TENANT_ID``
        and, optionally, ``MINOOTS_REGION``; keyword arguments override them."""
        env = {
            "base_url": os.environ.get("MINOOTS_API_URL"),
            "api_key": os.environ.get("MINOOTS_API_KEY"),
            "tenant_id": os.environ.get("MINOOTS_TENANT_ID"),
            "default_region": os.environ.get("MINOOTS_REGION") or None,
        }
        kwargs: dict[str, Any] = {**{k: v for k, v in env.items() if v}, **overrides}
        names = {"base_url": "MINOOTS_API_URL", "api_key": "MINOOTS_API_KEY", "tenant_id": "MINOOTS_TENANT_ID"}
        missing = [variable for key, variable in names.items() if not kwargs.get(key)]
        if missing:
            raise ValueError(f"set {', '.join(missing)} to configure MinootsClient.from_env()")
        return cls(**kwargs)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def sync_client(self) -> httpx.Client:
        if self._sync_client is None:
            self._sync_client = httpx.Client(timeout=self.timeout)
        return self._sync_client

    @property
    def async_client(self) -> httpx.AsyncClient:
        if self._async_client is None:
            self._async_client = httpx.AsyncClient(timeout=self.timeout)
        return self._async_client

    def close(self) -> None:
        if self._owns_sync and self._sync_client is not None:
            self._sync_client.close()
            self._sync_client = None

    async def aclose(self) -> None:
        self.close()
        if self._owns_async and self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None

    def __enter__(self) -> MinootsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> MinootsClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- request plans (no I/O) ------------------------------------------------------------

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"x-api-key": self.api_key, "accept": "application/json", "content-type": "application/json"}
        headers.update(extra or {})
        return headers

    def _url(self, *parts: str) -> str:
        return "/".join([self.base_url, *(quote(p, safe="") for p in parts)])

    def _create_body(
        self,
        *,
        name: str | None,
        requested_by: str | None,
        duration: Duration | None,
        fire_at: Timestamp | None,
        metadata: Mapping[str, Any] | None,
        labels: Mapping[str, str] | None,
        action_bundle: Mapping[str, Any] | None,
        agent_binding: Mapping[str, Any] | None,
        region: str | None,
        ecosystem: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """The create body of one timer (``POST /timers``, or one of ``/timers/batch``)."""
        if (duration is None) == (fire_at is None):
            raise ValueError("give exactly one of duration or fire_at")
        body: dict[str, Any] = {"tenantId": self.tenant_id, "requestedBy": requested_by or self.default_requested_by}
        if name is not None:
            body["name"] = name
        if duration is not None:
            body["duration"] = _duration(duration)
        else:
            assert fire_at is not None
            body["fireAt"] = _timestamp(fire_at, "fire_at")
        body["metadata"] = dict(metadata or {})
        merged_labels = dict(labels or {})
        # An explicit region wins; the client's default only fills a region the labels lack.
        if region:
            merged_labels[REGION_LABEL] = region
        elif self.default_region and REGION_LABEL not in merged_labels:
            merged_labels[REGION_LABEL] = self.default_region
        if merged_labels:
            body["labels"] = merged_labels
        if action_bundle is not None:
            body["actionBundle"] = dict(action_bundle)
        if agent_binding is not None:
            body["agentBinding"] = dict(agent_binding)
        if ecosystem is not None:
            body["ecosystem"] = dict(ecosystem)
        return body

    def _create_call(self, body: dict[str, Any], idempotency_key: str | None) -> Call:
        extra = {"idempotency-key": idempotency_key or str(uuid.uuid4())}
        region = body.get("labels", {}).get(REGION_LABEL)
        if region is not None:
            extra[REGION_HEADER] = region
        return Call("POST", self._url("timers"), self._headers(extra), body=body)

    def _batch_calls(self, timers: Iterable[TimerRequest | Mapping[str, Any]], chunk_size: int) -> list[Call]:
        """One ``POST /timers/batch`` per ``chunk_size`` timers, every timer with its
        ``idempotencyKey`` (the caller's, or a new UUID), so a chunk sent again creates nothing
        twice. A timer ``schedule_timer`` would refuse locally is refused before anything is sent."""
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or not 1 <= chunk_size <= BATCH_MAX:
            raise ValueError(f"chunk_size must be from 1 to {BATCH_MAX}")
        bodies: list[dict[str, Any]] = []
        for index, timer in enumerate(timers):
            if not isinstance(timer, Mapping):
                raise TypeError(f"timers[{index}] must be a mapping of schedule_timer's arguments")
            unknown = sorted(set(timer) - TIMER_REQUEST_FIELDS)
            if unknown:
                raise TypeError(
                    f"timers[{index}]: unknown argument(s) {', '.join(unknown)}; "
                    f"schedule_timer takes {', '.join(sorted(TIMER_REQUEST_FIELDS))}"
                )
            try:
                body = self._create_body(
                    name=timer.get("name"),
                    requested_by=timer.get("requested_by"),
                    duration=timer.get("duration"),
                    fire_at=timer.get("fire_at"),
                    metadata=timer.get("metadata"),
                    labels=timer.get("labels"),
                    action_bundle=timer.get("action_bundle"),
                    agent_binding=timer.get("agent_binding"),
                    region=timer.get("region"),
                    ecosystem=timer.get("ecosystem"),
                )
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"timers[{index}]: {exc}") from exc
            body["idempotencyKey"] = timer.get("idempotency_key") or str(uuid.uuid4())
            bodies.append(body)
        url = self._url("timers", "batch")
        return [
            Call("POST", url, self._headers(), body={"timers": bodies[start : start + chunk_size]})
            for start in range(0, len(bodies), chunk_size)
        ]

    def _list_params(
        self,
        *,
        status: str | Iterable[str] | None,
        name: str | None,
        labels: Mapping[str, str] | None,
        fire_after: Timestamp | None,
        fire_before: Timestamp | None,
        limit: int | None,
    ) -> list[tuple[str, str]]:
        params: list[tuple[str, str]] = [("tenantId", self.tenant_id)]
        if status is not None:
            params.append(("status", status if isinstance(status, str) else ",".join(status)))
        if name is not None:
            params.append(("name", name))
        for key, value in (labels or {}).items():
            params.append(("label", f"{key}:{value}"))
        if fire_after is not None:
            params.append(("fireAfter", _timestamp(fire_after, "fire_after")))
        if fire_before is not None:
            params.append(("fireBefore", _timestamp(fire_before, "fire_before")))
        if limit is not None:
            params.append(("limit", str(limit)))
        return params

    def _list_call(self, params: list[tuple[str, str]]) -> Call:
        return Call("GET", self._url("timers"), self._headers(), params=params)

    def _get_call(self, timer_id: str) -> Call:
        return Call("GET", self._url("timers", str(timer_id)), self._headers())

    def _events_call(self, timer_id: str) -> Call:
        return Call("GET", self._url("timers", str(timer_id), "events"), self._headers())

    def _cancel_call(self, timer_id: str, reason: str | None, requested_by: str | None) -> Call:
        body: dict[str, Any] = {"tenantId": self.tenant_id, "requestedBy": requested_by or self.default_requested_by}
        if reason is not None:
            body["reason"] = reason
        # Cancelling twice answers the timer unchanged: safe to retry.
        return Call("POST", self._url("timers", str(timer_id), "cancel"), self._headers(), body=body)

    def _reschedule_call(
        self,
        timer_id: str,
        duration: Duration | None,
        fire_at: Timestamp | None,
        if_match: int | str | None,
        requested_by: str | None,
    ) -> Call:
        if (duration is None) == (fire_at is None):
            raise ValueError("give exactly one of duration or fire_at")
        body: dict[str, Any] = {"tenantId": self.tenant_id, "requestedBy": requested_by or self.default_requested_by}
        if duration is not None:
            body["duration"] = _duration(duration)
        else:
            assert fire_at is not None
            body["fireAt"] = _timestamp(fire_at, "fire_at")
        extra = {}
        if if_match is not None:
            extra["if-match"] = f'"{if_match}"' if isinstance(if_match, int) else if_match
        # A reschedule answered but lost would, sent again, move the timer again (a duration is
        # from now) or meet its own new version (409): sent again only when it surely was not sent.
        return Call("PATCH", self._url("timers", str(timer_id)), self._headers(extra), body=body, retry="unsent")

    def _stream_request(
        self, last_event_id: int | None, topics: Iterable[str] | None
    ) -> tuple[str, dict[str, str], list[tuple[str, str]]]:
        extra = {"accept": "text/event-stream", "cache-control": "no-cache"}
        if last_event_id is not None:
            extra["last-event-id"] = str(last_event_id)
        params = [("topic", ",".join(topics))] if topics else []
        return self._url("timers", "stream"), self._headers(extra), params

    # -- sending ---------------------------------------------------------------------------

    def _send(self, call: Call) -> httpx.Response:
        content = call.content()
        attempt = 0
        while True:
            try:
                response = self.sync_client.request(
                    call.method, call.url, params=tuple(call.params), content=content, headers=call.headers
                )
            except httpx.TransportError as exc:
                delay = retry_delay_after_error(exc, call, attempt, self.max_retries)
                if delay is None:
                    raise _unreachable(call, exc) from exc
            else:
                delay = retry_delay_after_response(response, attempt, self.max_retries)
                if delay is None:
                    return response
                response.close()
            attempt += 1
            time.sleep(delay)

    async def _send_async(self, call: Call) -> httpx.Response:
        content = call.content()
        attempt = 0
        while True:
            try:
                response = await self.async_client.request(
                    call.method, call.url, params=tuple(call.params), content=content, headers=call.headers
                )
            except httpx.TransportError as exc:
                delay = retry_delay_after_error(exc, call, attempt, self.max_retries)
                if delay is None:
                    raise _unreachable(call, exc) from exc
            else:
                delay = retry_delay_after_response(response, attempt, self.max_retries)
                if delay is None:
                    return response
                await response.aclose()
            attempt += 1
            await asyncio.sleep(delay)

    def _call(self, call: Call) -> Any:
        return _decode(self._send(call))

    async def _call_async(self, call: Call) -> Any:
        return _decode(await self._send_async(call))

    # -- timers ----------------------------------------------------------------------------

    def schedule_timer(
        self,
        name: str | None = None,
        *,
        requested_by: str | None = None,
        duration: Duration | None = None,
        fire_at: Timestamp | None = None,
        metadata: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
        action_bundle: Mapping[str, Any] | None = None,
        agent_binding: Mapping[str, Any] | None = None,
        region: str | None = None,
        ecosystem: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Timer:
        """Create a timer: ``duration`` from now (``"90s"``, ``"5m"``, ``"1h30m"``, ``"PT15M"``,
        milliseconds, a ``timedelta``) or ``fire_at`` (RFC 3339 with an offset, or an aware
        ``datetime``). ``region`` becomes label ``minoots.io/region`` (and header
        ``x-minoots-region``). Returns the timer as the API shows it."""
        body = self._create_body(
            name=name,
            requested_by=requested_by,
            duration=duration,
            fire_at=fire_at,
            metadata=metadata,
            labels=labels,
            action_bundle=action_bundle,
            agent_binding=agent_binding,
            region=region,
            ecosystem=ecosystem,
        )
        call = self._create_call(body, idempotency_key)
        result: Timer = self._call(call)
        return result

    async def schedule_timer_async(
        self,
        name: str | None = None,
        *,
        requested_by: str | None = None,
        duration: Duration | None = None,
        fire_at: Timestamp | None = None,
        metadata: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
        action_bundle: Mapping[str, Any] | None = None,
        agent_binding: Mapping[str, Any] | None = None,
        region: str | None = None,
        ecosystem: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Timer:
        """``schedule_timer``, async."""
        body = self._create_body(
            name=name,
            requested_by=requested_by,
            duration=duration,
            fire_at=fire_at,
            metadata=metadata,
            labels=labels,
            action_bundle=action_bundle,
            agent_binding=agent_binding,
            region=region,
            ecosystem=ecosystem,
        )
        call = self._create_call(body, idempotency_key)
        result: Timer = await self._call_async(call)
        return result

    def schedule_timers(
        self, timers: Iterable[TimerRequest | Mapping[str, Any]], *, chunk_size: int = BATCH_MAX
    ) -> list[BatchResult]:
        """Create many timers through ``POST /timers/batch``, ``chunk_size`` (at most 1,000) per
        request, one request after the other. Each timer is a mapping of ``schedule_timer``'s
        keyword arguments (``{"name": "a", "duration": "5m", "region": "eu-west"}``).

        Returns one ``BatchResult`` per timer, in input order: its ``timer`` (201 created, 200 an
        ``idempotency_key`` replay) or its typed ``error`` (400, 403, 409, 429), returned, not
        raised: one invalid timer refuses only itself. Every timer carries an idempotency key
        (its ``idempotency_key``, else a new UUID), so a chunk retried after a lost answer
        creates nothing twice. A failure of a whole request (401, 403, a 429 or 503 that its
        retries did not outlast, the server unreachable) raises the typed error; the chunks
        before it are stored: give each timer its own ``idempotency_key`` and the same call made
        again gets those back (200) and creates only the rest. A timer ``schedule_timer`` would
        refuse locally (neither or both of ``duration`` and ``fire_at``, a naive datetime, an
        unknown argument) raises ValueError or TypeError naming its index, before anything is sent.
        """
        results: list[BatchResult] = []
        for call in self._batch_calls(timers, chunk_size):
            count = len(call.body["timers"])
            results += batch_results(self._call(call), offset=len(results), count=count)
        return results

    async def schedule_timers_async(
        self, timers: Iterable[TimerRequest | Mapping[str, Any]], *, chunk_size: int = BATCH_MAX
    ) -> list[BatchResult]:
        """``schedule_timers``, async (the chunks still one after the other: a tenant's quota
        admits the first timers)."""
        results: list[BatchResult] = []
        for call in self._batch_calls(timers, chunk_size):
            count = len(call.body["timers"])
            results += batch_results(await self._call_async(call), offset=len(results), count=count)
        return results

    def get_timer(self, timer_id: str) -> Timer:
        """The timer with its action runs (``actionRuns``) and their attempts; ``NotFound`` if
        this tenant has no such timer."""
        result: Timer = self._call(self._get_call(timer_id))
        return result

    async def get_timer_async(self, timer_id: str) -> Timer:
        result: Timer = await self._call_async(self._get_call(timer_id))
        return result

    def list_timers(
        self,
        *,
        status: str | Iterable[str] | None = None,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        fire_after: Timestamp | None = None,
        fire_before: Timestamp | None = None,
        limit: int | None = None,
    ) -> Iterator[Timer]:
        """The tenant's timers, newest first, across every page (``limit`` is the page size,
        1-500). Filters combine: ``status`` (one or several), ``name``, ``labels`` (all must
        match), ``fireAt`` in [``fire_after``, ``fire_before``)."""
        params = self._list_params(
            status=status, name=name, labels=labels, fire_after=fire_after, fire_before=fire_before, limit=limit
        )
        while True:
            page = self._call(self._list_call(params))
            yield from page.get("timers", [])
            cursor = _next_cursor(page)
            if cursor is None:
                return
            params = [*(p for p in params if p[0] != "cursor"), ("cursor", cursor)]

    async def list_timers_async(
        self,
        *,
        status: str | Iterable[str] | None = None,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        fire_after: Timestamp | None = None,
        fire_before: Timestamp | None = None,
        limit: int | None = None,
    ) -> AsyncGenerator[Timer, None]:
        """``list_timers``, async: ``async for timer in client.list_timers_async(...)``."""
        params = self._list_params(
            status=status, name=name, labels=labels, fire_after=fire_after, fire_before=fire_before, limit=limit
        )
        while True:
            page = await self._call_async(self._list_call(params))
            for timer in page.get("timers", []):
                yield timer
            cursor = _next_cursor(page)
            if cursor is None:
                return
            params = [*(p for p in params if p[0] != "cursor"), ("cursor", cursor)]

    def cancel_timer(self, timer_id: str, *, reason: str | None = None, requested_by: str | None = None) -> Timer:
        """Cancel a timer; one already settled, failed or cancelled comes back unchanged."""
        result: Timer = self._call(self._cancel_call(timer_id, reason, requested_by))
        return result

    async def cancel_timer_async(
        self, timer_id: str, *, reason: str | None = None, requested_by: str | None = None
    ) -> Timer:
        result: Timer = await self._call_async(self._cancel_call(timer_id, reason, requested_by))
        return result

    def timer_events(self, timer_id: str) -> list[dict[str, Any]]:
        """The timer's event log, oldest first (``created``, ``armed``, ``fired``, ...)."""
        events: list[dict[str, Any]] = self._call(self._events_call(timer_id))["events"]
        return events

    async def timer_events_async(self, timer_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = (await self._call_async(self._events_call(timer_id)))["events"]
        return events

    def reschedule_timer(
        self,
        timer_id: str,
        *,
        duration: Duration | None = None,
        fire_at: Timestamp | None = None,
        if_match: int | str | None = None,
        requested_by: str | None = None,
    ) -> Timer:
        """Move a pending timer to ``fire_at``, or ``duration`` from now. With ``if_match`` (the
        ``stateVersion`` read before, or the ETag of ``GET``) a timer changed since is a
        ``ConflictError``; so is one no longer pending."""
        result: Timer = self._call(self._reschedule_call(timer_id, duration, fire_at, if_match, requested_by))
        return result

    async def reschedule_timer_async(
        self,
        timer_id: str,
        *,
        duration: Duration | None = None,
        fire_at: Timestamp | None = None,
        if_match: int | str | None = None,
        requested_by: str | None = None,
    ) -> Timer:
        call = self._reschedule_call(timer_id, duration, fire_at, if_match, requested_by)
        result: Timer = await self._call_async(call)
        return result

    # -- the event stream ------------------------------------------------------------------

    @contextlib.contextmanager
    def _open_stream(
        self, last_event_id: int | None, read_timeout: float, topics: Iterable[str] | None = None
    ) -> Iterator[Iterator[StreamEvent]]:
        """One connection to the stream; entered once the answer's head has arrived (from then
        on no event is missed)."""
        url, headers, params = self._stream_request(last_event_id, topics)
        timeout = httpx.Timeout(self.timeout, read=max(read_timeout, 0.05))
        with self.sync_client.stream("GET", url, params=tuple(params), headers=headers, timeout=timeout) as response:
            if response.status_code != 200:
                response.read()
                raise _decode_error(response)
            yield SSEParser().feed(response.iter_lines())

    @contextlib.asynccontextmanager
    async def _open_stream_async(
        self, last_event_id: int | None, read_timeout: float, topics: Iterable[str] | None = None
    ) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        url, headers, params = self._stream_request(last_event_id, topics)
        timeout = httpx.Timeout(self.timeout, read=max(read_timeout, 0.05))
        async with self.async_client.stream(
            "GET", url, params=tuple(params), headers=headers, timeout=timeout
        ) as response:
            if response.status_code != 200:
                await response.aread()
                raise _decode_error(response)
            yield _aiter_events(response)

    def stream_events(
        self,
        *,
        last_event_id: int | None = None,
        topics: Iterable[str] | None = None,
        reconnect: bool = True,
        read_timeout: float = STREAM_READ_TIMEOUT,
    ) -> Iterator[StreamEvent]:
        """The tenant's timer events as they happen (after ``last_event_id``, else from now), only
        those of the kinds in ``topics`` when given (``["fired", "settled"]``).

        The server ends a stream after a few minutes; with ``reconnect`` it is opened again
        after the last event seen, so nothing is missed. Stop by leaving the loop.
        """
        failures = 0
        while True:
            try:
                with self._open_stream(last_event_id, read_timeout, topics) as events:
                    failures = 0
                    for event in events:
                        if event.id is not None:
                            last_event_id = event.id
                        yield event
            except (httpx.TransportError, MinootsError) as exc:
                retryable = isinstance(exc, httpx.TransportError) or (
                    isinstance(exc, MinootsError) and exc.status in (429, 503)
                )
                if not reconnect or not retryable or failures >= self.max_retries:
                    if isinstance(exc, httpx.TransportError):
                        raise Unavailable(f"event stream at {self.base_url} failed: {exc!r}") from exc
                    raise
                failures += 1
                wait = exc.retry_after if isinstance(exc, MinootsError) and exc.retry_after else 1.0
                time.sleep(min(wait, 30.0))
                continue
            if not reconnect:
                return
            time.sleep(0.2)

    async def stream_events_async(
        self,
        *,
        last_event_id: int | None = None,
        topics: Iterable[str] | None = None,
        reconnect: bool = True,
        read_timeout: float = STREAM_READ_TIMEOUT,
    ) -> AsyncGenerator[StreamEvent, None]:
        """``stream_events``, async: ``async for event in client.stream_events_async()``."""
        failures = 0
        while True:
            try:
                async with self._open_stream_async(last_event_id, read_timeout, topics) as events:
                    failures = 0
                    async for event in events:
                        if event.id is not None:
                            last_event_id = event.id
                        yield event
            except (httpx.TransportError, MinootsError) as exc:
                retryable = isinstance(exc, httpx.TransportError) or (
                    isinstance(exc, MinootsError) and exc.status in (429, 503)
                )
                if not reconnect or not retryable or failures >= self.max_retries:
                    if isinstance(exc, httpx.TransportError):
                        raise Unavailable(f"event stream at {self.base_url} failed: {exc!r}") from exc
                    raise
                failures += 1
                wait = exc.retry_after if isinstance(exc, MinootsError) and exc.retry_after else 1.0
                await asyncio.sleep(min(wait, 30.0))
                continue
            if not reconnect:
                return
            await asyncio.sleep(0.2)

    # -- waiting ---------------------------------------------------------------------------

    def wait_for_timer(
        self, timer_id: str, *, timeout: float = 300.0, poll_interval: float = 1.0, use_stream: bool = True
    ) -> Timer:
        """Block until the timer is ``settled``, ``failed`` or ``cancelled`` and return it (with
        its action runs); ``TimerWaitTimeout`` (a ``TimeoutError``) after ``timeout`` seconds.

        Follows the event stream; where the stream cannot be opened (refused, a proxy that
        buffers it), polls ``GET /api/timers/{id}`` every ``poll_interval`` seconds instead.
        """
        deadline = time.monotonic() + timeout
        if use_stream:
            try:
                return self._wait_streaming(timer_id, deadline, timeout)
            except _StreamUnusable:
                pass
        return self._wait_polling(timer_id, deadline, timeout, poll_interval)

    def _wait_streaming(self, timer_id: str, deadline: float, timeout: float) -> Timer:
        last_event_id: int | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _wait_timeout(timer_id, timeout, self.get_timer(timer_id))
            try:
                stream = self._open_stream(last_event_id, min(remaining, STREAM_READ_TIMEOUT), _END_TOPICS)
                events = stream.__enter__()
            except (httpx.TransportError, MinootsError) as exc:
                raise _StreamUnusable() from exc
            try:
                # Read after the stream is open: an end between the two is in the stream.
                timer = self.get_timer(timer_id)
                if timer.get("status") in TERMINAL_STATUSES:
                    return timer
                for event in events:
                    if event.id is not None:
                        last_event_id = event.id
                    if event.timer_id == timer_id and event.kind in TERMINAL_STATUSES:
                        return self.get_timer(timer_id)
                    if time.monotonic() >= deadline:
                        break
            except httpx.TransportError:
                pass  # read timeout or a dropped connection: reconnect after the last event seen
            finally:
                stream.__exit__(None, None, None)

    async def wait_for_timer_async(
        self, timer_id: str, *, timeout: float = 300.0, poll_interval: float = 1.0, use_stream: bool = True
    ) -> Timer:
        """``wait_for_timer``, async."""
        deadline = time.monotonic() + timeout
        if use_stream:
            try:
                return await self._wait_streaming_async(timer_id, deadline, timeout)
            except _StreamUnusable:
                pass
        return await self._wait_polling_async(timer_id, deadline, timeout, poll_interval)

    async def _wait_streaming_async(self, timer_id: str, deadline: float, timeout: float) -> Timer:
        last_event_id: int | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _wait_timeout(timer_id, timeout, await self.get_timer_async(timer_id))
            stream = self._open_stream_async(last_event_id, min(remaining, STREAM_READ_TIMEOUT), _END_TOPICS)
            try:
                events = await stream.__aenter__()
            except (httpx.TransportError, MinootsError) as exc:
                raise _StreamUnusable() from exc
            try:
                timer = await self.get_timer_async(timer_id)
                if timer.get("status") in TERMINAL_STATUSES:
                    return timer
                async for event in events:
                    if event.id is not None:
                        last_event_id = event.id
                    if event.timer_id == timer_id and event.kind in TERMINAL_STATUSES:
                        return await self.get_timer_async(timer_id)
                    if time.monotonic() >= deadline:
                        break
            except httpx.TransportError:
                pass
            finally:
                await stream.__aexit__(None, None, None)

    def _wait_polling(self, timer_id: str, deadline: float, timeout: float, poll_interval: float) -> Timer:
        while True:
            timer = self.get_timer(timer_id)
            if timer.get("status") in TERMINAL_STATUSES:
                return timer
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _wait_timeout(timer_id, timeout, timer)
            time.sleep(min(poll_interval, remaining))

    async def _wait_polling_async(self, timer_id: str, deadline: float, timeout: float, poll_interval: float) -> Timer:
        while True:
            timer = await self.get_timer_async(timer_id)
            if timer.get("status") in TERMINAL_STATUSES:
                return timer
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _wait_timeout(timer_id, timeout, timer)
            await asyncio.sleep(min(poll_interval, remaining))


async def _aiter_events(response: httpx.Response) -> AsyncIterator[StreamEvent]:
    parser = SSEParser()
    async for line in response.aiter_lines():
        event = parser.line(line)
        if event is not None:
            yield event


def _duration(value: Duration) -> str | int:
    if isinstance(value, bool):
        raise TypeError("duration must be a string such as '5m', milliseconds or a timedelta")
    if isinstance(value, timedelta):
        return round(value.total_seconds() * 1000)
    if isinstance(value, (str, int)):
        return value
    raise TypeError("duration must be a string such as '5m', milliseconds or a timedelta")


def _timestamp(value: Timestamp, what: str) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{what} must be an aware datetime (with a timezone)")
        return value.isoformat()
    return value


def _next_cursor(page: Mapping[str, Any]) -> str | None:
    """The cursor of the page's ``next`` link. Only the cursor is taken: the link is the URL the
    server saw, which behind a proxy is not the client's base URL."""
    link = page.get("next")
    if not link:
        return None
    values = parse_qs(urlsplit(str(link)).query).get("cursor")
    return values[0] if values else None


def _decode(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json() if response.content else None
    raise _decode_error(response)


def _decode_error(response: httpx.Response) -> MinootsError:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:1000] or None
    return error_for(
        response.status_code, body, retry_after=retry_after_seconds(response), fallback=response.reason_phrase
    )


def _unreachable(call: Call, exc: Exception) -> Unavailable:
    return Unavailable(f"{call.method} {call.url} failed: {type(exc).__name__}: {exc}")


def _wait_timeout(timer_id: str, timeout: float, timer: Timer | None) -> TimerWaitTimeout:
    status = timer.get("status") if timer else None
    return TimerWaitTimeout(f"timer {timer_id} still {status} after {timeout:g}s", timer=timer)


__all__ = ["TERMINAL_STATUSES", "MinootsClient", "StreamEvent", "Timer"]
