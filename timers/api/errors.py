"""One error shape for the whole API: ``{"message": ..., "details": ...}``."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from django import db
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404, JsonResponse
from django.http.response import HttpResponseBase
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from timers.services import ServiceError

log = logging.getLogger(__name__)


def _first_message(detail: Any, path: str = "") -> str:
    """The first error as 'field: message', with a dotted path for nested fields."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            key_path = path if key == "non_field_errors" else (f"{path}.{key}" if path else str(key))
            return _first_message(value, key_path)
    if isinstance(detail, list) and detail:
        return _first_message(detail[0], path)
    text = str(detail)
    return f"{path}: {text}" if path else text


def error_body(message: str, details: Any = None, **extra: Any) -> dict[str, Any]:
    return {"message": message, "details": details, **extra}


def validation_error_body(detail: Any) -> dict[str, Any]:
    """The error body of a 400 from a serializer's errors: the first one as the message."""
    return error_body(_first_message(detail), detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        return Response(error_body(exc.message, exc.details, **exc.extra), status=exc.status_code)
    if isinstance(exc, (db.OperationalError, db.InterfaceError)):
        # The database is down or restarting: nothing was stored; the client should retry.
        log.warning("database unavailable: %s", type(exc).__name__, extra={"event": "database_unavailable"})
        return mark_logged(
            Response(
                error_body("Database unavailable; retry shortly"),
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
                headers={"Retry-After": "5"},
            )
        )
    if isinstance(exc, RequestDataTooBig):
        # Raised by request.body inside the view; left alone it would become a 500.
        return Response(
            error_body(f"Request body exceeds {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes"),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, SuspiciousOperation):
        return Response(error_body("Bad request"), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # unexpected: ApiErrorMiddleware renders the 500 in the same shape
    if isinstance(exc, exceptions.ValidationError):
        response.data = validation_error_body(exc.detail)
    elif isinstance(exc, exceptions.APIException):
        detail = exc.detail
        response.data = error_body(
            str(detail) if not isinstance(detail, (dict, list)) else _first_message(detail), None
        )
    return response


HttpResponseT = TypeVar("HttpResponseT", bound=HttpResponseBase)


def mark_logged(response: HttpResponseT) -> HttpResponseT:
    """For an expected 5xx (a dependency down, a capacity limit) its view logged once, at
    WARNING: keep django.request from logging it again at ERROR, as it logs every 5xx.
    ``_has_been_logged`` is the flag Django's own ``log_response`` sets and checks."""
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


def json_error(message: str, code: int, details: Any = None) -> JsonResponse:
    return JsonResponse(error_body(message, details), status=code)


def bad_request_view(request: Any, exception: Exception | None = None) -> JsonResponse:
    return json_error("Bad request", status.HTTP_400_BAD_REQUEST)


def forbidden_view(request: Any, exception: Exception | None = None) -> JsonResponse:
    return json_error("Forbidden", status.HTTP_403_FORBIDDEN)


def not_found_view(request: Any, exception: Exception | None = None) -> JsonResponse:
    return json_error("Not found", status.HTTP_404_NOT_FOUND)


def server_error_view(request: Any) -> JsonResponse:
    return json_error("Internal server error", status.HTTP_500_INTERNAL_SERVER_ERROR)
