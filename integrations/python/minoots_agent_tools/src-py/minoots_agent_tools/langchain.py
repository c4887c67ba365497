"""LangChain: ``AtoTimerTool``, a ``BaseTool`` that schedules a MINOOTS timer (extra ``[langchain]``).

    from minoots_agent_tools import MinootsClient
    from minoots_agent_tools.langchain import AtoTimerTool

    tool = AtoTimerTool(client=MinootsClient.from_env())   # or AtoTimerTool() for from_env()
    tool.invoke({"name": "check-build", "duration": "10m"})

The client is a pydantic private attribute: the original tool assigned ``self._client`` on a
pydantic model that did not declare it, and failed to construct (``"AtoTimerTool" object has no
field "_client"``).
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.tools import BaseTool
from langchain_core.tools.base import ArgsSchema
from pydantic import BaseModel, Field, PrivateAttr

from minoots_agent_tools._tooling import SCHEDULE_DESCRIPTION, schedule, schedule_async
from minoots_agent_tools.client import MinootsClient, Timer


class AtoTimerInput(BaseModel):
    name: str = Field(description="A short name for the timer, e.g. 'check-build'")
    duration: str | None = Field(default=None, description="From now: '90s', '5m', '1h30m', 'PT15M'")
    fire_at: str | None = Field(default=None, description="Instead of duration: RFC 3339 with an offset")
    metadata: dict[str, Any] | None = Field(default=None, description="Any JSON object kept with the timer")
    labels: dict[str, str] | None = Field(default=None, description="String labels, e.g. {'team': 'ops'}")
    region: str | None = Field(default=None, description="Region label minoots.io/region")
    action_bundle: dict[str, Any] | None = Field(default=None, description="What to do when it fires")
    agent_binding: dict[str, Any] | None = Field(default=None, description="The agent the timer belongs to")


class AtoTimerTool(BaseTool):
    """Schedule a MINOOTS timer from a LangChain agent; sync (``invoke``) and async (``ainvoke``)."""

    name: str = "ato_timer"
    description: str = SCHEDULE_DESCRIPTION
    args_schema: ArgsSchema | None = AtoTimerInput

    _client: MinootsClient = PrivateAttr()

    def __init__(self, client: MinootsClient | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client = client if client is not None else MinootsClient.from_env()

    @property
    def client(self) -> MinootsClient:
        return self._client

    def _run(
        self,
        name: str,
        duration: str | None = None,
        fire_at: str | None = None,
        metadata: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None,
        region: str | None = None,
        action_bundle: dict[str, Any] | None = None,
        agent_binding: dict[str, Any] | None = None,
        run_manager: CallbackManagerForToolRun | None = None,
    ) -> Timer:
        return schedule(
            self._client,
            name=name,
            duration=duration,
            fire_at=fire_at,
            metadata=metadata,
            labels=labels,
            region=region,
            action_bundle=action_bundle,
            agent_binding=agent_binding,
        )

    async def _arun(
        self,
        name: str,
        duration: str | None = None,
        fire_at: str | None = None,
        metadata: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None,
        region: str | None = None,
        action_bundle: dict[str, Any] | None = None,
        agent_binding: dict[str, Any] | None = None,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
    ) -> Timer:
        return await schedule_async(
            self._client,
            name=name,
            duration=duration,
            fire_at=fire_at,
            metadata=metadata,
            labels=labels,
            region=region,
            action_bundle=action_bundle,
            agent_binding=agent_binding,
        )


__all__ = ["AtoTimerInput", "AtoTimerTool"]
