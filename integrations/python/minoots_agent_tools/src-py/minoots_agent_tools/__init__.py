"""MINOOTS toolkit for agent runtimes: a typed sync/async client of the MINOOTS timer API.

    from minoots_agent_tools import MinootsClient

    client = MinootsClient.from_env()  # MINOOTS_API_URL, MINOOTS_API_KEY, MINOOTS_TENANT_ID
    timer = client.schedule_timer(name="deploy-check", duration="5m")
    done = client.wait_for_timer(timer["id"], timeout=600)
    results = client.schedule_timers([{"name": "a", "duration": "5m"}, {"name": "b", "duration": "1h"}])

Extras: ``minoots_agent_tools.langchain.AtoTimerTool`` (``[langchain]``),
``minoots_agent_tools.llamaindex.create_timer_tool`` (``[llamaindex]``) and the MCP server
``python -m minoots_agent_tools.mcp`` (``[mcp]``).
"""

from __future__ import annotations

from minoots_agent_tools._http import StreamEvent
from minoots_agent_tools.batch import BatchResult, TimerRequest
from minoots_agent_tools.client import REGION_LABEL, TERMINAL_STATUSES, MinootsClient, Timer
from minoots_agent_tools.errors import (
    AuthError,
    ConflictError,
    MinootsError,
    NotFound,
    RateLimited,
    TimerWaitTimeout,
    Unavailable,
    ValidationError,
)

__version__ = "0.3.0"

__all__ = [
    "REGION_LABEL",
    "TERMINAL_STATUSES",
    "AuthError",
    "BatchResult",
    "ConflictError",
    "MinootsClient",
    "MinootsError",
    "NotFound",
    "RateLimited",
    "StreamEvent",
    "Timer",
    "TimerRequest",
    "TimerWaitTimeout",
    "Unavailable",
    "ValidationError",
    "__version__",
]
