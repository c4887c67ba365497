"""Action runners, one module per kind; ``registry`` lists the kinds."""

from __future__ import annotations

from actions.errors import ActionError, ParameterError
from actions.runners.base import ActionContext, ActionResult, Runner
from actions.runners.registry import RUNNERS, get_runner

__all__ = ["RUNNERS", "ActionContext", "ActionError", "ActionResult", "ParameterError", "Runner", "get_runner"]
