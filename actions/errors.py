"""The two error types of actions (see DESIGN.md "Actions").

``ParameterError``: input that can never work (a bundle field or an action's parameter),
raised while parsing. ``ActionError``: a failed attempt, saying whether a retry can help.
"""

from __future__ import annotations


class ParameterError(ValueError):
    """Invalid input; ``field`` names it: a parameter (``url``) or a dotted bundle path
    (``actionBundle.actions[0].id``). ``str()`` is ``"field: message"``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


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
