"""Trace ids: from the request's ``x-trace-id`` header (or a new one) into every log line and
into the Celery tasks the request publishes, and from there into the tasks those publish.

The id lives in a context variable. ``before_task_publish`` copies it into the message headers;
``task_prerun`` restores it in the worker (a task published without one, e.g. by beat, gets a
fresh id so its lines still group together). Importing this module connects the signals; the
logging configuration imports it, so every Django process (web, worker, beat) has them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from celery.signals import before_task_publish, task_postrun, task_prerun

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

HEADER = "x-trace-id"
_VALID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

_trace_id: ContextVar[str | None] = ContextVar("minoots_trace_id", default=None)
# Tokens of task_prerun, keyed by task id, so task_postrun restores the worker thread's context.
_task_tokens: dict[str, Token[str | None]] = {}


def current_trace_id() -> str | None:
    return _trace_id.get()


def new_trace_id() -> str:
    return uuid.uuid4().hex


def clean_trace_id(value: str | None) -> str | None:
    """A client-supplied id is kept only if it is short and plain (it ends up in logs)."""
    if value and _VALID.match(value):
        return value
    return None


def set_trace_id(value: str | None) -> Token[str | None]:
    return _trace_id.set(value)


def reset_trace_id(token: Token[str | None]) -> None:
    _trace_id.reset(token)


class TraceIdMiddleware:
    """Bind the request's trace id (header ``x-trace-id`` or a new one); echo it in the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        trace_id = clean_trace_id(request.headers.get(HEADER)) or new_trace_id()
        token = _trace_id.set(trace_id)
        try:
            response = self.get_response(request)
        finally:
            _trace_id.reset(token)
        response[HEADER] = trace_id
        return response


@before_task_publish.connect(weak=False)
def _inject_trace_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    trace_id = _trace_id.get()
    if trace_id and headers is not None and "trace_id" not in headers:
        headers["trace_id"] = trace_id


@task_prerun.connect(weak=False)
def _restore_trace_id(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    incoming = clean_trace_id(getattr(request, "trace_id", None)) if request is not None else None
    token = _trace_id.set(incoming or new_trace_id())
    if task_id:
        _task_tokens[task_id] = token


@task_postrun.connect(weak=False)
def _clear_trace_id(task_id: str | None = None, **_: Any) -> None:
    token = _task_tokens.pop(task_id, None) if task_id else None
    if token is not None:
        try:
            _trace_id.reset(token)
        except ValueError:  # reset from another context (pool quirk): just clear it
            _trace_id.set(None)
