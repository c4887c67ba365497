"""What the agent-framework tools share: the description an LLM reads and the call it makes."""

from __future__ import annotations

from typing import Any

from minoots_agent_tools.client import MinootsClient, Timer

SCHEDULE_DESCRIPTION = (
    "Schedule a durable MINOOTS timer that fires once, on time, even if this agent stops. Give a short "
    "`name` and either `duration` from now ('90s', '5m', '1h30m', 'PT15M') or `fire_at` (RFC 3339 with an "
    "offset, e.g. 2030-01-01T14:00:00Z). Optional: `metadata` (any JSON object kept with the timer), "
    "`labels` (string map), `region`, `action_bundle` (what to do when it fires, e.g. "
    "{'actions': [{'id': 'a1', 'kind': 'webhook', 'parameters': {'url': 'https://...'}}]}) and "
    "`agent_binding`. Returns the timer: its `id`, `status` and `fireAt`."
)


def schedule_kwargs(
    *,
    name: str,
    duration: str | None,
    fire_at: str | None,
    metadata: dict[str, Any] | None,
    labels: dict[str, str] | None,
    region: str | None,
    action_bundle: dict[str, Any] | None,
    agent_binding: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "name": name,
        "duration": duration,
        "fire_at": fire_at,
        "metadata": metadata,
        "labels": labels,
        "region": region,
        "action_bundle": action_bundle,
        "agent_binding": agent_binding,
    }


def schedule(client: MinootsClient, **kwargs: Any) -> Timer:
    return client.schedule_timer(**schedule_kwargs(**kwargs))


async def schedule_async(client: MinootsClient, **kwargs: Any) -> Timer:
    return await client.schedule_timer_async(**schedule_kwargs(**kwargs))
