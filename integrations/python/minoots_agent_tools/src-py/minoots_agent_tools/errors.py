"""Typed errors: one class per family of API answers, all carrying status, message and details.

The API answers every error as ``{"message": ..., "details": ...}``; ``message`` names the
offending field (``"duration: must be positive"``).
"""

from __future__ import annotations

import builtins
from typing import Any


class MinootsError(Exception):
    """Any refusal or failure of the MINOOTS API.

    ``status`` is the HTTP status (``None`` when no answer came: the server was unreachable),
    ``message`` the API's message, ``details`` its details (per-field errors for a 400), and
    ``body`` the whole decoded error body.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        details: Any = None,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.details = details
        self.body = body
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.status} {self.message}" if self.status is not None else self.message


class ValidationError(MinootsError):
    """400 (and 413): the request was invalid; ``message`` names the field."""


class AuthError(MinootsError):
    """401 (no or a wrong API key) or 403 (the key may not do this, or another tenant)."""


class NotFound(MinootsError):
    """404: no such timer for this tenant (another tenant's timers are 404 too)."""


class ConflictError(MinootsError):
    """409: the timer changed since (a stale ``If-Match``), is no longer pending, or an
    ``Idempotency-Key`` was reused with another body (``details["timerId"]`` names the timer)."""


class RateLimited(MinootsError):
    """429: a tenant quota (``limit_type``: ``burst``, ``daily``, ``streams``) or a rate limit."""

    @property
    def limit_type(self) -> str | None:
        value = self.body.get("limitType") if isinstance(self.body, dict) else None
        return value if isinstance(value, str) else None


class Unavailable(MinootsError):
    """503 (a dependency of the server is down; ``retry_after`` says when to come back), or the
    server could not be reached at all (``status`` is ``None``) once the retries were spent."""


class TimerWaitTimeout(MinootsError, builtins.TimeoutError):
    """``wait_for_timer`` gave up before the timer ended; ``timer`` is the last state seen."""

    def __init__(self, message: str, *, timer: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.timer = timer


_BY_STATUS: dict[int, type[MinootsError]] = {
    400: ValidationError,
    413: ValidationError,
    401: AuthError,
    403: AuthError,
    404: NotFound,
    409: ConflictError,
    429: RateLimited,
    503: Unavailable,
}


def error_for(status: int, body: Any, *, retry_after: float | None = None, fallback: str = "") -> MinootsError:
    """The typed error of an API answer with ``status`` and decoded ``body``."""
    message = body.get("message") if isinstance(body, dict) else None
    details = body.get("details") if isinstance(body, dict) else None
    if not isinstance(message, str) or not message:
        message = fallback or f"HTTP {status}"
    cls = _BY_STATUS.get(status, MinootsError)
    return cls(message, status=status, details=details, body=body, retry_after=retry_after)
