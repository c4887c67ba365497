"""The toolkit's agent surfaces against a live server: the LangChain and LlamaIndex tools, the
MCP server over stdio driven by the MCP SDK's own client, and the package installed on its own."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from tests.integrations.conftest import TOOLKIT, TOOLKIT_SRC, Live

pytestmark = pytest.mark.e2e


def test_the_langchain_tool_constructs_and_schedules_sync_and_async(live: Live, monkeypatch) -> None:
    from langchain_core.tools import BaseTool
    from minoots_agent_tools.langchain import AtoTimerTool

    with live.client() as client:
        tool = AtoTimerTool(client=client)
        assert isinstance(tool, BaseTool) and tool.client is client
        assert {"name", "duration", "fire_at", "metadata", "labels"} <= set(tool.args)

        timer = tool.invoke({"name": "lc-sync", "duration": "1h", "labels": {"via": "langchain"}})
        assert timer["name"] == "lc-sync" and timer["labels"] == {"via": "langchain"}
        later = asyncio.run(tool.ainvoke({"name": "lc-async", "fire_at": timer["fireAt"]}))
        assert later["name"] == "lc-async" and later["fireAt"] == timer["fireAt"]

    for name, value in live.env().items():
        monkeypatch.setenv(name, value)
    from_env = AtoTimerTool()
    assert from_env.client.tenant_id == live.tenant_id
    assert from_env.invoke({"name": "lc-env", "duration": "1h"})["tenantId"] == live.tenant_id


def test_the_llamaindex_tool_takes_name_and_schedules_sync_and_async(live: Live) -> None:
    from minoots_agent_tools.llamaindex import TOOL_NAME, create_timer_tool

    with live.client() as client:
        tool = create_timer_tool(client)
        assert tool.metadata.name == TOOL_NAME
        parameters = tool.metadata.get_parameters_dict()
        assert parameters["required"] == ["name"] and "timer_name" not in parameters["properties"]

        output = tool.call(name="li-sync", duration="1h")
        assert output.raw_output["name"] == "li-sync" and not output.is_error
        later = asyncio.run(tool.acall(name="li-async", duration="2h"))
        assert later.raw_output["name"] == "li-async"
        assert {t["name"] for t in client.list_timers()} == {"li-sync", "li-async"}


def _error_text(result: Any) -> str:
    assert result.is_error
    return " ".join(getattr(block, "text", "") for block in result.content)


def _tool_result(result: Any) -> Any:
    assert not result.is_error, result.content
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


def test_the_mcp_server_over_stdio_schedules_lists_waits_and_cancels(live: Live) -> None:
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "minoots_agent_tools.mcp"],
        env={**live.env(), "PYTHONPATH": str(TOOLKIT_SRC)},
    )

    async def scenario() -> None:
        async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            tools = {tool.name for tool in (await session.list_tools()).tools}
            assert tools == {"schedule_timer", "get_timer", "list_timers", "cancel_timer", "wait_for_timer"}

            timer = _tool_result(await session.call_tool("schedule_timer", {"name": "mcp-soon", "duration": "2s"}))
            assert timer["status"] in ("scheduled", "armed") and timer["tenantId"] == live.tenant_id
            later = _tool_result(await session.call_tool("schedule_timer", {"name": "mcp-later", "duration": "1h"}))

            fetched = _tool_result(await session.call_tool("get_timer", {"timer_id": timer["id"]}))
            assert fetched["id"] == timer["id"] and "actionRuns" in fetched
            listed = _tool_result(await session.call_tool("list_timers", {"max_results": 1}))
            assert [t["name"] for t in listed["timers"]] == ["mcp-later"] and listed["truncated"] is True
            pending = _tool_result(await session.call_tool("list_timers", {"name": "mcp-later"}))
            assert [t["id"] for t in pending["timers"]] == [later["id"]] and pending["truncated"] is False

            waited = _tool_result(
                await session.call_tool("wait_for_timer", {"timer_id": timer["id"], "timeout_seconds": 30})
            )
            assert waited["done"] is True and waited["timer"]["status"] == "settled"
            not_yet = _tool_result(
                await session.call_tool("wait_for_timer", {"timer_id": later["id"], "timeout_seconds": 0.5})
            )
            assert not_yet["done"] is False and not_yet["timer"]["status"] == "scheduled"

            cancelled = _tool_result(
                await session.call_tool("cancel_timer", {"timer_id": later["id"], "reason": "agent changed its mind"})
            )
            assert cancelled["status"] == "cancelled" and cancelled["cancelReason"] == "agent changed its mind"

            refused = await session.call_tool("schedule_timer", {"name": "bad", "duration": "banana"})
            assert "duration" in _error_text(refused) and "400" in _error_text(refused)
            missing = await session.call_tool("get_timer", {"timer_id": "00000000-0000-0000-0000-000000000000"})
            assert "404" in _error_text(missing)

    asyncio.run(scenario())


@pytest.mark.timeout(240)
@pytest.mark.once_on_sqlite(reason="what is tested is the package's install; the server side is the same on both")
def test_the_package_installs_into_a_fresh_venv_and_waits_for_a_settled_timer(live: Live, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(TOOLKIT)],
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert install.returncode == 0, install.stdout + install.stderr

    script = (
        "import importlib.util, json, pathlib\n"
        "import minoots_agent_tools\n"
        "from minoots_agent_tools import MinootsClient\n"
        "assert importlib.util.find_spec('django') is None\n"
        "assert (pathlib.Path(minoots_agent_tools.__file__).parent / 'py.typed').is_file()\n"
        "client = MinootsClient.from_env()\n"
        "timer = client.schedule_timer(name='x', duration='2s')\n"
        "print(json.dumps(client.wait_for_timer(timer['id'], timeout=30)))\n"
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "DJANGO_SETTINGS_MODULE")}
    run = subprocess.run(
        [str(python), "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **live.env()},
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    timer = json.loads(run.stdout)
    assert timer["name"] == "x" and timer["status"] == "settled"
