"""An MCP server exposing MINOOTS timers as tools (extra ``[mcp]``, the official ``mcp`` SDK).

    MINOOTS_API_URL=http://127.0.0.1:8000/api MINOOTS_API_KEY=mk_... MINOOTS_TENANT_ID=acme \\
        python -m minoots_agent_tools.mcp          # or the console script: minoots-mcp

Speaks MCP over stdio. Tools: ``schedule_timer``, ``get_timer``, ``list_timers``,
``cancel_timer``, ``wait_for_timer``, each calling the REST API with the configured key. An
API refusal reaches the agent as a tool error carrying the API's message (``duration: must be
positive``), with the HTTP status.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable
from typing import Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from minoots_agent_tools.client import MinootsClient, Timer
from minoots_agent_tools.errors import MinootsError, TimerWaitTimeout

T = TypeVar("T")

INSTRUCTIONS = (
    "Durable timers from MINOOTS: schedule_timer fires once, on time, even if you stop; the timer can call a "
    "webhook or carry metadata for whoever picks it up. Keep the returned id to get, cancel or wait for it. "
    "Statuses: scheduled, armed (due soon), fired, then settled (its actions succeeded), failed or cancelled."
)

MAX_LIST = 500
MAX_WAIT_SECONDS = 3600.0


async def _api(call: Awaitable[T]) -> T:
    try:
        return await call
    except MinootsError as exc:
        details = f" ({exc.details})" if exc.details else ""
        raise ToolError(f"{exc}{details}") from exc


def build_server(client: MinootsClient) -> MCPServer[Any]:
    """The MCP server whose tools use ``client``."""
    server: MCPServer[Any] = MCPServer(name="minoots", instructions=INSTRUCTIONS)

    @server.tool()
    async def schedule_timer(
        name: str,
        duration: str | None = None,
        fire_at: str | None = None,
        metadata: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None,
        region: str | None = None,
        action_bundle: dict[str, Any] | None = None,
        agent_binding: dict[str, Any] | None = None,
    ) -> Timer:
        """Schedule a durable timer. Give `name` and either `duration` from now ('90s', '5m', '1h30m') or
        `fire_at` (RFC 3339 with an offset). `action_bundle` says what happens when it fires, e.g.
        {"actions": [{"id": "a1", "kind": "webhook", "parameters": {"url": "https://example.com/hook"}}]}.
        Returns the timer (its id, status, fireAt)."""
        if (duration is None) == (fire_at is None):
            raise ToolError("give exactly one of duration or fire_at")
        return await _api(
            client.schedule_timer_async(
                name,
                duration=duration,
                fire_at=fire_at,
                metadata=metadata,
                labels=labels,
                region=region,
                action_bundle=action_bundle,
                agent_binding=agent_binding,
            )
        )

    @server.tool()
    async def get_timer(timer_id: str) -> Timer:
        """A timer by id: its status, fireAt, firedAt, latenessMs and its action runs with their attempts."""
        return await _api(client.get_timer_async(timer_id))

    @server.tool()
    async def list_timers(
        status: str | None = None,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        fire_after: str | None = None,
        fire_before: str | None = None,
        max_results: int = 50,
    ) -> dict[str, Any]:
        """Timers of this tenant, newest first: filter by `status` (comma-separated: scheduled, armed, fired,
        settled, failed, cancelled), exact `name`, `labels` (all must match) and a fireAt range (RFC 3339).
        At most `max_results` (up to 500); `truncated` says whether more matched."""
        wanted = max(1, min(max_results, MAX_LIST))
        timers: list[Timer] = []
        truncated = False
        listing = client.list_timers_async(
            status=status,
            name=name,
            labels=labels,
            fire_after=fire_after,
            fire_before=fire_before,
            limit=min(wanted + 1, MAX_LIST),
        )
        try:
            async for timer in listing:
                if len(timers) == wanted:
                    truncated = True
                    break
                timers.append(timer)
        except MinootsError as exc:
            raise ToolError(str(exc)) from exc
        finally:
            await listing.aclose()
        return {"timers": timers, "truncated": truncated}

    @server.tool()
    async def cancel_timer(timer_id: str, reason: str | None = None) -> Timer:
        """Cancel a timer so it never fires (or, once fired, so its pending retries stop). A timer already
        settled, failed or cancelled comes back unchanged."""
        return await _api(client.cancel_timer_async(timer_id, reason=reason))

    @server.tool()
    async def wait_for_timer(timer_id: str, timeout_seconds: float = 60.0) -> dict[str, Any]:
        """Wait until the timer is settled, failed or cancelled (up to `timeout_seconds`, at most 3600).
        Returns {"done": true, "timer": ...} or, when time ran out, {"done": false, "timer": <last state>}."""
        try:
            timer = await client.wait_for_timer_async(
                timer_id, timeout=max(0.0, min(timeout_seconds, MAX_WAIT_SECONDS))
            )
        except TimerWaitTimeout as exc:
            return {"done": False, "timer": exc.timer}
        except MinootsError as exc:
            raise ToolError(str(exc)) from exc
        return {"done": True, "timer": timer}

    return server


def main() -> None:
    """``python -m minoots_agent_tools.mcp``: the server over stdio, configured from the environment."""
    try:
        client = MinootsClient.from_env()
    except ValueError as exc:
        sys.stderr.write(f"minoots-mcp: {exc}\n")
        raise SystemExit(2) from exc
    build_server(client).run("stdio")


if __name__ == "__main__":
    main()
