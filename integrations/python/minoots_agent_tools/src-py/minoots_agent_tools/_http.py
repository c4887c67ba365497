"""Request plans, retry decisions and the event-stream parser, shared by the sync and async paths.

Nothing here does I/O: ``client.py`` sends a ``Call`` with httpx (sync or async) and asks
``retry_delay`` after each try whether, and after how long, to send it again.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

# "always": the request may be sent again after any transport failure or 429/503 (reads, a
# cancel, a create carrying its Idempotency-Key). "unsent": only when it surely never reached
# the server (connection refused, no connection from the pool) or was refused with 429/503.
RetryMode = Literal["always", "unsent"]

BACKOFF_BASE = 0.25
BACKOFF_CAP = 8.0
# A Retry-After longer than this is not waited for: the error goes to the caller.
MAX_RETRY_AFTER = 60.0

_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_MAYBE_SENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    headers: dict[str, str]
    params: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None
    retry: RetryMode = "always"

    def content(self) -> bytes | None:
        # Serialized once, so every retry sends the very same bytes (the Idempotency-Key's
        # fingerprint is of the body).
        if self.body is None:
            return None
        return json.dumps(self.body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def backoff(attempt: int) -> float:
    """Full-jitter exponential backoff before retry number ``attempt + 1``."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))  # noqa: S311 (not cryptographic)


def retry_after_seconds(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw.strip())
    except ValueError:
        return None  # an HTTP date: not sent by MINOOTS; treated as absent
    return max(0.0, seconds) if seconds == seconds else None  # NaN


def retry_delay_after_error(exc: Exception, call: Call, attempt: int, max_retries: int) -> float | None:
    """Seconds to wait before sending ``call`` again after it raised ``exc``, or None."""
    if attempt >= max_retries:
        return None
    retryable = _UNSENT if call.retry == "unsent" else (*_UNSENT, *_MAYBE_SENT)
    return backoff(attempt) if isinstance(exc, retryable) else None


def retry_delay_after_response(response: httpx.Response, attempt: int, max_retries: int) -> float | None:
    """Seconds to wait before sending the request again after ``response``, or None.

    429 and 503 are retried; 503 always (a dependency of the server is down, or every stream
    slot is taken), 429 only with a ``Retry-After``: a tenant quota without one (active timers,
    creates per day) does not clear by waiting a second. ``Retry-After`` is honoured, with a
    little jitter so that clients refused together do not come back together.
    """
    if attempt >= max_retries or response.status_code not in (429, 503):
        return None
    after = retry_after_seconds(response)
    if after is None:
        return backoff(attempt) if response.status_code == 503 else None
    if after > MAX_RETRY_AFTER:
        return None
    return after + random.uniform(0, min(1.0, after * 0.1 + 0.05))  # noqa: S311


@dataclass(frozen=True)
class StreamEvent:
    """One server-sent event of ``GET /api/timers/stream``.

    ``id`` is the event id (resume after it with ``last_event_id``), ``event`` its kind
    (``created``, ``armed``, ``fired``, ``settled``, ...), ``data`` the decoded JSON (``timerId``,
    ``tenantId``, ``name``, ``kind``, ``stateVersion``, ``occurredAt``, ``data``).
    """

    id: int | None
    event: str
    data: Any

    @property
    def timer_id(self) -> str | None:
        if not isinstance(self.data, dict):
            return None
        value = self.data.get("timerId")
        if value is None:  # the original control plane's envelope: {"event": {"timer": {...}}}
            inner = self.data.get("event")
            timer = inner.get("timer") if isinstance(inner, dict) else None
            value = timer.get("id") if isinstance(timer, dict) else None
        return value if isinstance(value, str) else None

    @property
    def kind(self) -> str:
        value = self.data.get("kind") if isinstance(self.data, dict) else None
        return value if isinstance(value, str) else self.event


class SSEParser:
    """Incremental parser of a ``text/event-stream`` (the WHATWG rules MINOOTS needs: ``id``,
    ``event``, multi-line ``data``, ``retry``; comments ignored)."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, lines: Iterable[str]) -> Iterator[StreamEvent]:
        for line in lines:
            event = self.line(line)
            if event is not None:
                yield event

    def line(self, line: str) -> StreamEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self._id = value
        elif name == "retry" and value.isdecimal():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> StreamEvent | None:
        if not self._data:
            self._event = ""
            return None
        raw = "\n".join(self._data)
        self._data = []
        event, self._event = self._event or "message", ""
        try:
            data: Any = json.loads(raw)
        except ValueError:
            data = raw
        event_id = int(self._id) if self._id is not None and self._id.isdecimal() else None
        return StreamEvent(id=event_id, event=event, data=data)
