"""Unexpected errors under /api/ become JSON in the one error shape, never an HTML page."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.exceptions import PermissionDenied, SuspiciousOperation
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
