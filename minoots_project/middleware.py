"""Request bodies read before anything else; unexpected errors under /api/ become JSON in the
one error shape, never an HTML page."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse

from timers.api.errors import json_error

log = logging.getLogger("minoots.api")

MESSAGES = {
    400: "Bad request",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
    500: "Internal server error",
}


class _BodyTooSlow(Exception):
    pass


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise _BodyTooSlow when the block takes longer than ``seconds`` (gevent workers only:
    elsewhere, a test client or the dev server, there is no slow peer to guard against)."""
    if "gevent" not in sys.modules:
        yield
        return
    import gevent  # noqa: PLC0415 (only in the web workers)

    with gevent.Timeout(seconds, _BodyTooSlow):
        yield


class RequestBodyFirstMiddleware:
    """Read the whole request body before authentication, the view or anything else that may
    take a database connection, within MINOOTS_REQUEST_BODY_SECONDS.

    A client that drips its body then holds only its own greenlet, never one of the web
    process's pooled database connections, and is answered 408 at the deadline. A body over
    DATA_UPLOAD_MAX_MEMORY_SIZE is a 413 here, as it would be in the view.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            seconds = settings.MINOOTS_REQUEST_BODY_SECONDS
            try:
                with _deadline(seconds):
                    request.body  # noqa: B018 (read and cached for the view)
            except RequestDataTooBig:
                return json_error(f"Request body exceeds {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes", 413)
            except _BodyTooSlow:
                log.warning("request body not received within %ss", seconds, extra={"event": "body_timeout"})
                response = json_error(f"Request body not received within {seconds:g} s", 408)
                response["Connection"] = "close"
                return response
        return self.get_response(request)


class ApiErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            request.path.startswith("/api/")
            and response.status_code in MESSAGES
            and not response.get("Content-Type", "").startswith("application/json")
            and not request.path.startswith(("/api/docs", "/api/schema"))
            and "text/html" not in request.headers.get("Accept", "")
        ):
            return json_error(MESSAGES[response.status_code], response.status_code)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not request.path.startswith("/api/"):
            return None
        if isinstance(exception, SuspiciousOperation):
            return json_error(f"Bad request: {type(exception).__name__}", 400)
        if isinstance(exception, PermissionDenied):
            return json_error("Forbidden", 403)
        if isinstance(exception, Http404):
            return json_error("Not found", 404)
        log.exception("unhandled error", extra={"path": request.path})
        return json_error("Internal server error", 500)
