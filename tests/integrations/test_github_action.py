"""The GitHub Action (integrations/github-action) run as a runner runs it: ``node index.js`` with
its inputs in INPUT_* variables (GitHub's names: upper case, hyphens kept) and GITHUB_OUTPUT,
against a live web, worker and beat (one stack for the module: ``live``)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integrations.conftest import Live
from tests.net import free_port
from tests.processes import ROOT, wait_for
from timers.models import Timer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

# A webhook to a closed port on 127.0.0.1 is a failed delivery, not a refused private address.
LIVE_STACK_ENV = {"MINOOTS_WEBHOOK_ALLOW_PRIVATE": "true"}

NODE = "/usr/bin/node" if Path("/usr/bin/node").exists() else "node"
ENTRY = str(ROOT / "integrations" / "github-action" / "index.js")


def read_outputs(path: Path) -> dict[str, str]:
    """GITHUB_OUTPUT as the runner reads it: ``name=value`` lines and ``name<<DELIM`` heredocs."""
    outputs: dict[str, str] = {}
    lines = iter(path.read_text().split("\n"))
    for line in lines:
        if "<<" in line:
            name, delimiter = line.split("<<", 1)
            value = []
            for item in lines:
                if item == delimiter:
                    break
                value.append(item)
            outputs[name] = "\n".join(value)
        elif "=" in line:
            name, value_text = line.split("=", 1)
            outputs[name] = value_text
    return outputs


def action_env(tmp_path: Path, step: str, base: str, api_key: str, **inputs: str) -> dict[str, str]:
    """The environment of one step: the workflow's variables and the inputs as GitHub names them."""
    output = tmp_path / f"{step}.out"
    output.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INPUT_", "GITHUB_"))}
    env.update(
        {
            "GITHUB_OUTPUT": str(output),
            "GITHUB_RUN_ID": "9001",
            "GITHUB_RUN_ATTEMPT": "1",
            "GITHUB_JOB": "deploy",
            "GITHUB_ACTION": step,
            "GITHUB_REPOSITORY": "acme/app",
            "INPUT_API-BASE-URL": f"{base}/api",
            "INPUT_API-KEY": api_key,
            "INPUT_TIMEOUT-SECONDS": "10",
            "INPUT_POLL-INTERVAL-SECONDS": "0.3",
        }
    )
    env.update({f"INPUT_{key.replace('_', '-').upper()}": value for key, value in inputs.items()})
    return env


def run_action(env: dict[str, str], timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    done = subprocess.run([NODE, ENTRY], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    return done, read_outputs(Path(env["GITHUB_OUTPUT"]))


def stack_key(headers: dict[str, str]) -> str:
    return headers["X-API-Key"]


def stack(live: Live) -> tuple[str, dict[str, str]]:
    """(the server's root URL, the request headers of the test's tenant)."""
    return live.base_url.removesuffix("/api"), {"X-API-Key": live.api_key}


def test_action_schedules_a_timer_waits_for_it_and_a_rerun_of_the_step_makes_no_second_timer(
    live: Live, tmp_path: Path
) -> None:
    base, headers = stack(live)
    inputs = {
        "tenant_id": live.tenant_id,
        "name": "ci-deploy",
        "duration": "1s",
        "region": "eu-west",
        "labels": '{"app": "web"}',
        "metadata": '{"note": "line one\\nline two"}',
        "wait": "true",
    }
    env = action_env(tmp_path, "schedule", base, stack_key(headers), **inputs)

    done, outputs = run_action(env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == f"::add-mask::{stack_key(headers)}"
    assert stack_key(headers) not in done.stdout.split("\n", 1)[1]  # only in the mask command
    timer = Timer.objects.get(tenant_id=live.tenant_id)
    assert outputs["timer-id"] == str(timer.id)
    assert outputs["region"] == "eu-west"
    assert outputs["status"] == "settled"
    assert outputs["fired-at"] and int(outputs["lateness-ms"]) >= 0
    created = json.loads(outputs["response-json"])  # multiline-safe: the metadata's newline survives
    assert created["metadata"] == {"note": "line one\nline two"}
    assert created["labels"] == {"app": "web", "minoots.io/region": "eu-west"}
    assert created["fireAt"] == outputs["fire-at"]
    assert timer.requested_by == "github-action"
    assert (timer.idempotency_key or "").startswith("gha-9001-")

    # "Re-run jobs": the same step of the same run again (a new attempt): the same timer.
    env["GITHUB_RUN_ATTEMPT"] = "2"
    Path(env["GITHUB_OUTPUT"]).write_text("")
    again, outputs_again = run_action(env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert outputs_again["timer-id"] == str(timer.id)
    assert outputs_again["status"] == "settled"
    assert Timer.objects.filter(tenant_id=live.tenant_id).count() == 1

    # Another step of the same job is another timer.
    other = action_env(tmp_path, "schedule-2", base, stack_key(headers), **{**inputs, "wait": "false"})
    done_other, outputs_other = run_action(other)
    assert done_other.returncode == 0, done_other.stdout + done_other.stderr
    assert outputs_other["timer-id"] != str(timer.id)
    assert outputs_other["status"] == "armed"
    assert "fired-at" not in outputs_other


def test_action_with_wait_fails_the_step_when_its_timer_fails_or_is_cancelled(live: Live, tmp_path: Path) -> None:
    base, headers = stack(live)
    failing_bundle = {
        "actions": [{"id": "hook", "kind": "webhook", "parameters": {"url": f"http://127.0.0.1:{free_port()}/"}}],
        "retryPolicy": {"maxAttempts": 1},
    }
    failing = action_env(
        tmp_path,
        "fails",
        base,
        stack_key(headers),
        duration="1s",
        action_bundle=json.dumps(failing_bundle),
        wait="true",
    )
    waiting = action_env(tmp_path, "cancelled", base, stack_key(headers), name="long", duration="10m", wait="true")
    cancelled_step = subprocess.Popen([NODE, ENTRY], env=waiting, stdout=subprocess.PIPE, text=True)
    try:
        done, outputs = run_action(failing)
        long_timer = wait_for(
            lambda: Timer.objects.filter(tenant_id=live.tenant_id, name="long").first(),
            timeout=20,
            what="the long timer",
        )
        cancel = requests.post(
            f"{base}/api/timers/{long_timer.id}/cancel", json={"reason": "build failed"}, headers=headers, timeout=10
        )
        assert cancel.status_code == 200, cancel.text
        stdout, _ = cancelled_step.communicate(timeout=30)
    finally:
        cancelled_step.kill()

    assert done.returncode == 1
    assert outputs["status"] == "failed"
    assert "::error::Timer " in done.stdout and "ended failed: actions failed: hook" in done.stdout
    assert cancelled_step.returncode == 1
    assert "ended cancelled: build failed" in stdout
    assert read_outputs(Path(waiting["GITHUB_OUTPUT"]))["status"] == "cancelled"


class _Flaky(BaseHTTPRequestHandler):
    """503 with Retry-After: 0 to the first create, 201 to the next; records every request."""

    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
        if len(self.seen) == 1:
            self._reply(503, {"message": "database unavailable", "details": None}, {"Retry-After": "0"})
        else:
            self._reply(201, {"id": "t-1", "fireAt": "2030-01-01T00:00:00Z", "status": "scheduled", "labels": {}})

    def _reply(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def flaky_server() -> Iterator[str]:
    _Flaky.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_action_retries_a_503_with_the_same_idempotency_key_and_the_original_body(
    flaky_server: str, tmp_path: Path
) -> None:
    env = action_env(tmp_path, "retry", flaky_server.removesuffix("/api"), "k-secret", duration="15m", region="us")
    env["INPUT_API-BASE-URL"] = flaky_server  # this fake answers at /timers

    done, outputs = run_action(env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert outputs["timer-id"] == "t-1"
    assert outputs["region"] == "us"
    first, second = _Flaky.seen
    assert first["headers"]["idempotency-key"] == second["headers"]["idempotency-key"]
    assert first["headers"]["x-minoots-region"] == "us"
    assert first["body"] == {
        "requestedBy": "github-action",
        "name": "github-timer",
        "duration": "15m",
        "labels": {"minoots.io/region": "us"},
    }
    assert "HTTP 503; retry 1 of 4" in done.stdout


def test_action_fails_the_step_naming_a_missing_input(tmp_path: Path) -> None:
    env = action_env(tmp_path, "bad", "http://127.0.0.1:9", "k")
    done, outputs = run_action(env)
    assert done.returncode == 1
    assert "::error::Provide either the 'duration' or 'fire-at' input" in done.stdout
    assert outputs == {}
