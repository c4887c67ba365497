"""Unexpected errors under /api/ become JSON in the one error shape, never an HTML page."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from timers.api.errors import json_error

log = logging.getLogger("minoots.api")


class ApiErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            request.path.startswith("/api/")
            and response.status_code in (404, 405, 500)
            and not response.get("Content-Type", "").startswith("application/json")
            and not request.path.startswith(("/api/docs", "/api/schema"))
            and "text/html" not in request.headers.get("Accept", "")
        ):
            messages = {404: "Not found", 405: "Method not allowed", 500: "Internal server error"}
            return json_error(messages[response.status_code], response.status_code)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not request.path.startswith("/api/"):
            return None
        log.exception("unhandled error", extra={"path": request.path})
        return json_error("Internal server error", 500)
