"""The per-tenant allow-list of action kinds: refused at create (400 naming the kind) and again
at each attempt (the run fails for good, saying why)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from actions.batch import runs_execute_batch
from actions.models import ActionAttempt, ActionRun, AttemptOutcome, RunStatus
from tests.factories import api_client, make_api_key, make_tenant, make_timer
from timers import services
from timers.models import Tenant, Timer, TimerStatus
from timers.services import TimerSpec, ValidationFailed

pytestmark = pytest.mark.django_db

HOOK = {"id": "hook", "kind": "webhook", "parameters": {"url": "https://example.com/hook"}}


def file_action(action_id: str = "note") -> dict[str, Any]:
    return {"id": action_id, "kind": "file", "parameters": {"path": "notes.txt", "content": "hi\n", "mode": "append"}}


@pytest.fixture
def file_root(settings: Any, tmp_path: Path) -> Path:
    root = tmp_path / "files"
    root.mkdir()
    settings.MINOOTS_FILE_ROOT = str(root)
    return root


def create(tenant: Tenant, actions: list[dict[str, Any]]) -> Any:
    client = api_client(api_key=make_api_key(tenant=tenant))
    return client.post(
        "/api/timers", {"name": "t", "duration": "1h", "actionBundle": {"actions": actions}}, format="json"
    )


def test_an_empty_list_allows_every_kind(db: Any) -> None:
    assert create(make_tenant(), [HOOK]).status_code == 201


def test_create_refuses_a_kind_off_the_list_naming_it(db: Any, file_root: Path) -> None:
    tenant = make_tenant(allowed_action_kinds=["file"])
    response = create(tenant, [file_action(), HOOK])
    assert response.status_code == 400
    body = response.json()
    assert body["message"].startswith("actionBundle.actions[1].kind: kind 'webhook' is not allowed for tenant 'acme'")
    assert "its allowed action kinds: file" in body["message"]
    assert not Timer.objects.exists()
    assert create(tenant, [file_action()]).status_code == 201


def test_create_refuses_an_escalation_of_a_kind_off_the_list(db: Any, file_root: Path) -> None:
    tenant = make_tenant(allowed_action_kinds=["file"])
    escalating = {**file_action(), "escalation": {"afterAttempts": 1, "escalatesTo": HOOK}}
    response = create(tenant, [escalating])
    assert response.status_code == 400
    assert response.json()["message"].startswith("actionBundle.actions[0].escalation.escalatesTo.kind: kind 'webhook'")


def test_every_caller_of_timer_create_meets_the_list(db: Any) -> None:
    tenant = make_tenant(allowed_action_kinds=["command"])
    with pytest.raises(ValidationFailed) as refused:
        services.timer_create(
            tenant=tenant, spec=TimerSpec(name="t", duration=timedelta(hours=1), action_bundle={"actions": [HOOK]})
        )
    assert refused.value.field == "actionBundle.actions[0].kind"


def _fired_with(tenant: Tenant, actions: list[dict[str, Any]]) -> Timer:
    timer = make_timer(tenant=tenant, actions=actions)
    services.timers_fire(limit=10)
    timer.refresh_from_db()
    assert timer.status == TimerStatus.FIRED
    return timer


def _run_ids(timer: Timer) -> list[Any]:
    return list(ActionRun.objects.filter(timer=timer, status=RunStatus.PENDING).values_list("pk", flat=True))


def test_an_attempt_of_a_kind_taken_off_the_list_fails_for_good(db: Any, file_root: Path, broker: Any) -> None:
    tenant = make_tenant(allowed_action_kinds=["file"])
    allowed = _fired_with(tenant, [file_action()])
    assert runs_execute_batch(run_ids=_run_ids(allowed)) == 1
    allowed.refresh_from_db()
    assert allowed.status == TimerStatus.SETTLED
    assert (file_root / "acme" / "notes.txt").read_text() == "hi\n"

    timer = _fired_with(tenant, [file_action()])
    Tenant.objects.filter(pk=tenant.pk).update(allowed_action_kinds=["webhook"])  # the rollout is undone
    runs_execute_batch(run_ids=_run_ids(timer))

    run = ActionRun.objects.get(timer=timer)
    assert run.status == RunStatus.FAILED and run.attempts == 1  # permanent: no retry
    assert "kind 'file' is not allowed for tenant 'acme'" in run.last_error
    assert "taken off the list" in run.last_error
    attempt = ActionAttempt.objects.get(run=run)
    assert attempt.outcome == AttemptOutcome.PERMANENT
    timer.refresh_from_db()
    assert timer.status == TimerStatus.FAILED
    assert (file_root / "acme" / "notes.txt").read_text() == "hi\n"  # the second write never happened
