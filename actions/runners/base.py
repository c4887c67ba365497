"""One base class and one error type for every action kind (see DESIGN.md "Actions")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


class ParameterError(ValueError):
    """Parameters that can never work; ``field`` names the parameter (e.g. ``url``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def is_utf8(text: str) -> bool:
    """False for strings JSON allows but no file, process or socket can carry (lone surrogates)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class ActionError(Exception):
    """A failed attempt. ``permanent`` says a retry cannot help; ``retry_after`` (seconds) is a hint."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        retry_after: float | None = None,
        http_status: int | None = None,
        exit_code: int | None = None,
        output: str = "",
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after
        self.http_status = http_status
        self.exit_code = exit_code
        self.output = output


@dataclass(frozen=True)
class ActionContext:
    """What a runner may know about the run it executes."""

    run_id: str
    timer_id: str
    tenant_id: str
    timer: dict[str, Any]


@dataclass(frozen=True)
class ActionResult:
    summary: str
    http_status: int | None = None
    exit_code: int | None = None
    output: str = ""


class Runner:
    """Validate parameters at creation time and run one attempt at fire time."""

    kind: ClassVar[str]

    def validate(self, parameters: dict[str, Any], *, tenant_id: str) -> dict[str, Any]:
        """Return the normalised parameters or raise ParameterError. Called by the API and again by run()."""
        raise NotImplementedError

    def run(self, parameters: dict[str, Any], context: ActionContext) -> ActionResult:
        """Execute one attempt; raise ActionError on failure."""
        raise NotImplementedError
