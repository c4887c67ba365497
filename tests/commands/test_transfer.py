"""``minoots export`` / ``import``: JSON Lines round trip keeping ids, events and runs; idempotent."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from actions.models import ActionAttempt, ActionRun
from tests.commands.conftest import refused, run, run_json
from tests.factories import make_run, make_timer, schedule_timer
from timers.models import ApiKey, Tenant, Timer, TimerEvent


def _history(tenant: Tenant) -> None:
    """A settled timer with a run and attempts, an escalated failure, a pending and a cancelled one."""
    now = timezone.now()
    settled = make_timer(
        tenant=tenant, status="settled", name="done", labels={"team": "ops"}, settled_at=now, lateness_ms=7
    )
    TimerEvent.objects.create(timer=settled, kind="fired", occurred_at=now, state_version=3, data={"latenessMs": 7})
    TimerEvent.objects.create(timer=settled, kind="settled", occurred_at=now, state_version=4)
    ok = make_run(
        timer=settled,
        action_id="hook",
        status="succeeded",
        attempts=2,
        finished_at=now,
        parameters={"url": "https://a.example"},
    )
    ActionAttempt.objects.create(
        run=ok, number=1, started_at=now, finished_at=now, outcome="transient_failure", http_status=503
    )
    ActionAttempt.objects.create(
        run=ok, number=2, started_at=now, finished_at=now, outcome="succeeded", http_status=200
    )
    failed = make_timer(
        tenant=tenant, status="failed", name="broken", failure_reason="actions failed: b", settled_at=now
    )
    first = make_run(timer=failed, action_id="a", status="failed", attempts=1, last_error="HTTP 500")
    make_run(timer=failed, action_id="b", status="failed", escalation_level=1, escalated_from=first)
    schedule_timer(tenant=tenant, in_=timedelta(hours=2), name="later")
    make_timer(tenant=tenant, status="cancelled", name="off", cancelled_at=now, cancel_reason="why", cancelled_by="me")


def _export(path: Path, *args: str) -> list[dict[str, Any]]:
    run("export", "--output", str(path), *args)
    return [json.loads(line) for line in path.read_text().splitlines()]


def _wipe() -> None:
    """This installation without timers or tenants, as another one the export moves to."""
    Timer.objects.all().delete()
    ApiKey.objects.all().delete()
    # Without the cascade: it would visit every app's tables that refer to tenants, and no
    # row of those refers to the tenants of these tests.
    Tenant.objects.all()._raw_delete(using="default")


def test_export_writes_one_timer_a_line_with_its_events_and_runs(tenant: Tenant, tmp_path: Path) -> None:
    _history(tenant)
    lines = _export(tmp_path / "out.jsonl")
    assert sorted(line["name"] for line in lines) == ["broken", "done", "later", "off"]
    done = next(line for line in lines if line["name"] == "done")
    assert [e["kind"] for e in done["events"]] == ["fired", "settled"]
    assert done["actionRuns"][0]["attemptRecords"][1]["outcome"] == "succeeded"
    broken = next(line for line in lines if line["name"] == "broken")
    assert broken["actionRuns"][1]["escalatedFrom"] == broken["actionRuns"][0]["id"]


def test_export_to_stdout_and_its_json_summary(tenant: Tenant, tmp_path: Path) -> None:
    _history(tenant)
    out, err = run("export", "--status", "settled")
    assert [json.loads(line)["name"] for line in out.splitlines()] == ["done"]
    assert "Exported 1 timer(s) to stdout" in err
    assert run_json("export", "--output", str(tmp_path / "x.jsonl")) == {
        "exported": 4,
        "output": str(tmp_path / "x.jsonl"),
    }


def test_round_trip_into_an_empty_installation_keeps_ids_events_and_runs(tenant: Tenant, tmp_path: Path) -> None:
    _history(tenant)
    before = _export(tmp_path / "before.jsonl")
    runs_before = ActionRun.objects.count()
    _wipe()

    data = run_json("import", str(tmp_path / "before.jsonl"))

    assert data == {"lines": 4, "imported": 4, "unchanged": 0, "runsImported": runs_before, "tenantsCreated": ["acme"]}
    after = _export(tmp_path / "after.jsonl")
    assert after == before  # every field of every timer, event, run and attempt, ids included
    later = Timer.objects.get(name="later")
    assert later.status == "scheduled"  # pending timers come back pending, for the reconciler to arm


def test_importing_twice_changes_nothing(tenant: Tenant, tmp_path: Path) -> None:
    _history(tenant)
    path = tmp_path / "x.jsonl"
    before = _export(path)
    counts = (
        Timer.objects.count(),
        TimerEvent.objects.count(),
        ActionRun.objects.count(),
        ActionAttempt.objects.count(),
    )
    out, _ = run("import", str(path))
    assert "Imported 0 timer(s) with 0 action run(s); 4 already here, unchanged." in out
    assert (
        Timer.objects.count(),
        TimerEvent.objects.count(),
        ActionRun.objects.count(),
        ActionAttempt.objects.count(),
    ) == counts
    assert _export(tmp_path / "y.jsonl") == before


def test_import_from_stdin(tenant: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    _history(tenant)
    path = tmp_path / "x.jsonl"
    _export(path)
    _wipe()
    monkeypatch.setattr(sys, "stdin", io.StringIO(path.read_text()))
    assert run_json("import", "-")["imported"] == 4


def test_a_pending_imported_timer_still_fires(tenant: Tenant, tmp_path: Path) -> None:
    from timers import engine

    schedule_timer(tenant=tenant, in_=timedelta(hours=2), name="later")
    path = tmp_path / "x.jsonl"
    _export(path)
    _wipe()
    run("import", str(path))
    timer = Timer.objects.get()
    Timer.objects.filter(pk=timer.pk).update(fire_at=timezone.now() - timedelta(seconds=1))
    engine.reconcile()
    engine.fire_due(bucket=None)
    timer.refresh_from_db()
    assert timer.status == "settled"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.update(status="exploded"), "line 2: status: 'exploded' is not one of"),
        (lambda t: t.update(id="nope"), "line 2: id: is not a UUID"),
        (lambda t: t.update(tenantId="no spaces"), "line 2: tenantId: tenant must be a slug"),
        (lambda t: t.update(fireAt="tomorrow"), "line 2: fireAt: 'tomorrow' is not an RFC 3339 timestamp"),
        (lambda t: t.update(labels={"a:b": "c"}), "line 2: labels: label key 'a:b'"),
        (lambda t: t.update(metadata=[1]), "line 2: metadata: must be an object"),
        (lambda t: t.pop("events"), "line 2: events: is missing"),
        (lambda t: t["actionRuns"][0].update(status="maybe"), r"line 2: actionRuns\[0\].status: 'maybe'"),
        (lambda t: t.update(name="x" * 201), "line 2: name: is longer than 200 characters"),
    ],
)
def test_import_refuses_a_bad_line_naming_it_and_imports_nothing(
    tenant: Tenant, tmp_path: Path, mutate: Any, message: str
) -> None:
    now = timezone.now()
    make_timer(tenant=tenant, status="settled", name="a", settled_at=now, created_at=now - timedelta(seconds=1))
    make_run(timer=make_timer(tenant=tenant, status="settled", name="b", settled_at=now), status="succeeded")
    lines = _export(tmp_path / "x.jsonl")
    mutate(lines[1])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    _wipe()
    refused("import", str(bad), match=message + ".*nothing imported")
    assert not Timer.objects.exists() and not Tenant.objects.exists()


def test_import_refuses_junk_a_duplicate_line_and_a_missing_file(tenant: Tenant, tmp_path: Path) -> None:
    junk = tmp_path / "junk.jsonl"
    junk.write_text("\n[1]\n")
    refused("import", str(junk), match="line 2: line: must be a JSON object")
    junk.write_text("{not json\n")
    refused("import", str(junk), match="line 1: line: is not JSON")
    make_timer(tenant=tenant, status="settled", settled_at=timezone.now())
    line = _export(tmp_path / "one.jsonl")[0]
    junk.write_text(json.dumps(line) + "\n" + json.dumps(line) + "\n")
    refused("import", str(junk), match="line 2: id: timer .* is on an earlier line too")
    refused("import", str(tmp_path / "missing.jsonl"), match="no such file")


def test_a_pending_timer_whose_actions_the_destination_forbids_is_refused(tenant: Tenant, tmp_path: Path) -> None:
    from django.test import override_settings

    with override_settings(MINOOTS_COMMAND_ALLOWLIST=["/bin/echo"]):
        run("timers", "create", "--tenant", "acme", "--name", "cmd", "--duration", "1h", "--command", "/bin/echo")
    path = tmp_path / "x.jsonl"
    _export(path)
    _wipe()
    refused(
        "import", str(path), match=r"line 1: actionBundle: actions\[0\].parameters.argv: .*MINOOTS_COMMAND_ALLOWLIST"
    )
