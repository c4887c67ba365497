"""LlamaIndex: a ``FunctionTool`` that schedules a MINOOTS timer (extra ``[llamaindex]``).

    from minoots_agent_tools.llamaindex import create_timer_tool

    tool = create_timer_tool()            # MinootsClient.from_env(), or create_timer_tool(client)
    tool.call(name="check-build", duration="10m")

Its parameter is ``name``, as documented (the original tool's function took ``timer_name``).
"""

from __future__ import annotations

from typing import Any

from llama_index.core.tools import FunctionTool

from minoots_agent_tools._tooling import SCHEDULE_DESCRIPTION, schedule, schedule_async
from minoots_agent_tools.client import MinootsClient, Timer

TOOL_NAME = "schedule_minoots_timer"


def create_timer_tool(client: MinootsClient | None = None) -> FunctionTool:
    """A FunctionTool (sync ``call`` and async ``acall``) scheduling timers with ``client``."""
    minoots = client if client is not None else MinootsClient.from_env()

    def schedule_minoots_timer(
        name: str,
        duration: str | None = None,
        fire_at: str | None = None,
        metadata: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None,
        region: str | None = None,
        action_bundle: dict[str, Any] | None = None,
        agent_binding: dict[str, Any] | None = None,
    ) -> Timer:
        return schedule(
            minoots,
            name=name,
            duration=duration,
            fire_at=fire_at,
            metadata=metadata,
            labels=labels,
            region=region,
            action_bundle=action_bundle,
            agent_binding=agent_binding,
        )

    async def aschedule_minoots_timer(
        name: str,
        duration: str | None = None,
        fire_at: str | None = None,
        metadata: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None,
        region: str | None = None,
        action_bundle: dict[str, Any] | None = None,
        agent_binding: dict[str, Any] | None = None,
    ) -> Timer:
        return await schedule_async(
            minoots,
            name=name,
            duration=duration,
            fire_at=fire_at,
            metadata=metadata,
            labels=labels,
            region=region,
            action_bundle=action_bundle,
            agent_binding=agent_binding,
        )

    return FunctionTool.from_defaults(
        fn=schedule_minoots_timer,
        async_fn=aschedule_minoots_timer,
        name=TOOL_NAME,
        description=SCHEDULE_DESCRIPTION,
    )


__all__ = ["TOOL_NAME", "create_timer_tool"]
