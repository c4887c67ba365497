"""Registry: action kind -> runner. One module per kind."""

from __future__ import annotations

from actions.runners.base import ActionContext, ActionError, ActionResult, ParameterError, Runner

RUNNERS: dict[str, Runner] = {}


def register(runner: Runner) -> Runner:
    RUNNERS[runner.kind] = runner
    return runner


def get_runner(kind: str) -> Runner:
    if kind not in RUNNERS:
        raise ParameterError("kind", f"unknown kind '{kind}'; available kinds: {', '.join(sorted(RUNNERS))}")
    return RUNNERS[kind]


__all__ = ["RUNNERS", "ActionContext", "ActionError", "ActionResult", "ParameterError", "Runner", "get_runner", "register"]


def load_runners() -> None:
    """Import every runner module; each registers its kind."""
    import importlib

    for module in ("webhook", "command", "file"):
        importlib.import_module(f"actions.runners.{module}")
