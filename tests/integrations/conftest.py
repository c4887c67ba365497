"""The Python toolkit's tests: imported from its source tree, against one live stack.

``live_stack`` is module-scoped: one gunicorn web, one worker (both queues) and one beat serve
every test of a module, and are killed when its last test ends, before the next module runs (so
they never consume the tasks of another module's processes, which may run with other settings). Each test gets its own
tenant and API key (``live``), committed, since the tests are transactional. A module's
``LIVE_STACK_ENV`` (a dict), if it has one, is added to the processes' environment.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.factories import make_api_key, make_tenant
from tests.processes import Processes, print_logs_if_failed, service_env

TOOLKIT = Path(__file__).resolve().parents[2] / "integrations" / "python" / "minoots_agent_tools"
TOOLKIT_SRC = TOOLKIT / "src-py"
if str(TOOLKIT_SRC) not in sys.path:
    sys.path.insert(0, str(TOOLKIT_SRC))


@dataclass
class Live:
    """A tenant of the live stack: what a client needs to talk to it."""

    base_url: str  # the API root, ending in /api
    api_key: str
    tenant_id: str
    processes: Processes

    def env(self) -> dict[str, str]:
        return {"MINOOTS_API_URL": self.base_url, "MINOOTS_API_KEY": self.api_key, "MINOOTS_TENANT_ID": self.tenant_id}

    def client(self, **kwargs: Any) -> Any:
        from minoots_agent_tools import MinootsClient

        return MinootsClient(base_url=self.base_url, api_key=self.api_key, tenant_id=self.tenant_id, **kwargs)


@pytest.fixture(scope="module")
def live_stack(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[Processes, str]]:
    workdir = tmp_path_factory.mktemp("toolkit-stack")
    procs = Processes(
        workdir=workdir, env=service_env(workdir / "data", **getattr(request.module, "LIVE_STACK_ENV", {}))
    )
    try:
        web, base = procs.web(wait=False)
        procs.wait_ready(web, procs.worker(wait=False), procs.beat(wait=False))
        procs.wait_answering(web, base)
        yield procs, base
    finally:
        procs.stop_all()


@pytest.fixture
def live(live_stack: tuple[Processes, str], transactional_db: None, request: pytest.FixtureRequest) -> Iterator[Live]:
    procs, base = live_stack
    tenant = make_tenant(id=f"kit-{uuid.uuid4().hex[:10]}")
    key = make_api_key(tenant=tenant, name="toolkit")
    yield Live(base_url=f"{base}/api", api_key=key, tenant_id=tenant.id, processes=procs)
    print_logs_if_failed(request, [(p.name, p.log()) for p in procs.started])
