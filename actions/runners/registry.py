"""Every action kind, listed here and nowhere else: kind -> runner."""

from __future__ import annotations

from typing import Any

from actions.errors import ParameterError
from actions.runners.agent_prompt import AgentPromptRunner
from actions.runners.base import Runner
from actions.runners.command import CommandRunner
from actions.runners.file import FileRunner
from actions.runners.slack import SlackRunner
from actions.runners.webhook import WebhookRunner

# Tests add a fake kind with monkeypatch.setitem(RUNNERS, kind, runner).
RUNNERS: dict[str, Runner[Any]] = {
    runner.kind: runner
    for runner in (WebhookRunner(), CommandRunner(), FileRunner(), SlackRunner(), AgentPromptRunner())
}


def get_runner(kind: str) -> Runner[Any]:
    """The runner of ``kind``, or ParameterError("kind", ...) listing the kinds there are."""
    if kind not in RUNNERS:
        raise ParameterError("kind", f"unknown kind '{kind}'; available kinds: {', '.join(sorted(RUNNERS))}")
    return RUNNERS[kind]
