"""End to end: real web, worker and beat processes run a timer's actions.

Waits are bounded ("eventually, within N seconds"); nothing here asserts how fast.
"""

from __future__ import annotations

import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from standardwebhooks import Webhook

from actions.models import ActionRun, AttemptOutcome, RunStatus
from tests.actions.support import Receiver, Reply
from tests.factories import schedule_timer
from tests.processes import Processes, wait_for
from timers.models import Tenant, Timer, TimerStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


@pytest.fixture
def action_env(processes: Processes, tmp_path: Path) -> Path:
    """Enable every kind in the service processes; return the file root."""
    root = tmp_path / "files"
    root.mkdir()
    processes.env.update(
        {
            "MINOOTS_WEBHOOK_ALLOW_PRIVATE": "true",
            "MINOOTS_COMMAND_ALLOWLIST": "/bin/sh",
            "MINOOTS_FILE_ROOT": str(root),
        }
    )
    return root


def test_timer_with_a_webhook_a_command_and_a_file_action_settles_with_all_three_effects(
    tenant: Tenant, receiver: Receiver, processes: Processes, action_env: Path, tmp_path: Path
) -> None:
    base, headers = processes.stack(tenant)
    command_out = tmp_path / "command-ran"
    bundle = {
        "actions": [
            {"id": "hook", "kind": "webhook", "parameters": {"url": f"{receiver.url}/fired"}},
            {
                "id": "cmd",
                "kind": "command",
                "parameters": {"argv": ["/bin/sh", "-c", f'echo "$MINOOTS_TIMER_ID" > {command_out}']},
            },
            {"id": "note", "kind": "file", "parameters": {"path": "notes/done.txt", "content": "timer done\n"}},
        ],
        "concurrency": 3,
    }

    created = requests.post(
        f"{base}/api/timers",
        json={"name": "three", "duration": "1s", "actionBundle": bundle},
        headers=headers,
        timeout=10,
    )
    assert created.status_code == 201, created.text
    timer_id = created.json()["id"]

    def settled() -> dict[str, Any] | None:
        body = requests.get(f"{base}/api/timers/{timer_id}", headers=headers, timeout=10).json()
        return body if body["status"] in ("settled", "failed") else None

    body = wait_for(settled, timeout=45, what="the timer to settle")
    assert body["status"] == "settled", body
    assert sorted((r["actionId"], r["status"], len(r["attemptRecords"])) for r in body["actionRuns"]) == [
        ("cmd", "succeeded", 1),
        ("hook", "succeeded", 1),
        ("note", "succeeded", 1),
    ]
    [request] = receiver.at("/fired")
    payload = Webhook(tenant.webhook_secret).verify(request.body, request.headers)
    assert payload["timer"]["id"] == timer_id
    assert command_out.read_text() == f"{timer_id}\n"
    assert (action_env / "acme" / "notes" / "done.txt").read_text() == "timer done\n"


def test_run_of_a_worker_killed_mid_action_completes_after_restart(
    tenant: Tenant, receiver: Receiver, processes: Processes, action_env: Path
) -> None:
    # A 3 s lease is shorter than the longest attempt a webhook may take, which the settings
    # checks refuse (minoots.E002); here it only makes the dead worker's run recoverable quickly.
    processes.env.update({"MINOOTS_ACTION_LEASE": "3s", "CELERY_SKIP_CHECKS": "1"})
    receiver.script("/slow", Reply(hang=True))  # the first attempt never gets an answer
    doomed = processes.worker("doomed", wait=False)
    processes.wait_ready(doomed, processes.beat(wait=False))
    timer = schedule_timer(
        tenant=tenant,
        name="kill",
        in_=timedelta(seconds=1),
        actions=[{"id": "hook", "kind": "webhook", "parameters": {"url": f"{receiver.url}/slow"}}],
    )

    assert receiver.arrived.wait(30), "the first attempt never reached the receiver"
    doomed.signal_group(signal.SIGKILL)
    doomed.popen.wait(10)
    run = ActionRun.objects.get(timer=timer)
    assert run.status == RunStatus.RUNNING
    processes.worker("survivor")

    wait_for(
        lambda: Timer.objects.filter(pk=timer.pk, status__in=[TimerStatus.SETTLED, TimerStatus.FAILED]).exists(),
        timeout=45,
        what="the run to be recovered and the timer to settle",
    )
    timer.refresh_from_db()
    run.refresh_from_db()
    assert timer.status == TimerStatus.SETTLED
    assert run.status == RunStatus.SUCCEEDED
    assert [(a.number, a.outcome) for a in run.attempt_records.order_by("number")] == [
        (1, AttemptOutcome.TRANSIENT),
        (2, AttemptOutcome.SUCCEEDED),
    ]
    first, second = receiver.at("/slow")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == str(run.pk)
