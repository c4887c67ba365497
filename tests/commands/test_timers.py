"""``minoots timers create|list|show|cancel|reschedule|fire-now``: the API's rules, from a shell."""

from __future__ import annotations

import json
from datetime import UTC, timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from actions.models import ActionAttempt
from tests.commands.conftest import refused, run, run_json
from tests.factories import make_run, make_timer, schedule_timer
from timers.models import Tenant, Timer, TimerEvent, TimerStatus


def test_create_with_a_duration_labels_metadata_and_a_webhook(tenant: Tenant) -> None:
    out, err = run(
        "timers",
        "create",
        "--tenant",
        "acme",
        "--name",
        "backup",
        "--duration",
        "10m",
        "--label",
        "team=ops",
        "--label",
        "env=prod",
        "--metadata",
        '{"ticket": 42}',
        "--webhook",
        "https://example.com/hook",
    )
    timer = Timer.objects.get()
    assert out.strip() == str(timer.id)
    assert "Created timer" in err
    assert timer.status == TimerStatus.SCHEDULED and timer.duration_ms == 600_000
    assert timer.labels == {"team": "ops", "env": "prod"} and timer.metadata == {"ticket": 42}
    assert timer.action_bundle == {
        "actions": [{"id": "webhook", "kind": "webhook", "parameters": {"url": "https://example.com/hook"}}],
        "concurrency": 1,
    }
    assert timer.requested_by == "cli"
    assert list(TimerEvent.objects.values_list("kind", flat=True)) == ["created"]


def test_create_json_is_the_api_form(tenant: Tenant) -> None:
    data = run_json("timers", "create", "--tenant", "acme", "--name", "soon", "--duration", "30s")
    assert data["status"] == "armed" and data["durationMs"] == 30_000 and data["tenantId"] == "acme"
    assert {"id", "fireAt", "stateVersion", "latenessMs", "labels"} <= set(data)


def test_create_at_a_time_with_a_command_and_a_file(tenant: Tenant, tmp_path: Any) -> None:
    local = (timezone.now() + timedelta(days=30)).astimezone(timezone.get_fixed_timezone(120)).replace(microsecond=0)
    with override_settings(MINOOTS_COMMAND_ALLOWLIST=["/bin/echo"], MINOOTS_FILE_ROOT=str(tmp_path)):
        data = run_json(
            "timers",
            "create",
            "--tenant",
            "acme",
            "--name",
            "at",
            "--fire-at",
            local.isoformat(),
            "--requested-by",
            "ops-bot",
            "--file",
            "notes/out.txt",
            "--content",
            "hello",
            "--command",
            "/bin/echo",
            "hi",
        )
    assert (
        data["fireAt"] == local.astimezone(UTC).isoformat().replace("+00:00", "Z") and data["requestedBy"] == "ops-bot"
    )
    kinds = {a["kind"]: a["parameters"] for a in data["actionBundle"]["actions"]}
    assert kinds == {
        "command": {"argv": ["/bin/echo", "hi"]},
        "file": {"path": "notes/out.txt", "content": "hello", "mode": "write"},
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duration", "5x"], "--duration: unknown unit 'x'"),
        (["--duration=-5m"], "--duration: must be positive"),
        (["--fire-at", "2020-01-01T00:00:00Z"], "--fire-at: must be in the future"),
        (["--fire-at", "2030-01-01T00:00:00"], "--fire-at: must include a UTC offset"),
        (["--duration", "5m", "--label", "nokey"], "--label 'nokey' must look like key=value"),
        (["--duration", "5m", "--label", "a:b=c"], "--label: label key 'a:b' must be 1-100 characters without ':'"),
        (["--duration", "5m", "--label", "a=1", "--label", "a=2"], "--label 'a' is given twice"),
        (["--duration", "5m", "--metadata", "[1]"], "--metadata: must be a JSON object"),
        (["--duration", "5m", "--metadata", "{x"], "--metadata is not valid JSON"),
        (["--duration", "5m", "--webhook", "ftp://x"], "must be an http or https URL"),
        (["--duration", "5m", "--command", "/bin/echo"], "MINOOTS_COMMAND_ALLOWLIST is empty"),
        (["--duration", "5m", "--file", "x.txt"], "--file and --content go together"),
        (["--duration", "5m", "--webhook", "https://a.example", "--action-bundle", "{}"], "not both"),
        (["--duration", "5m", "--action-bundle", '{"actions": [{"id": "a", "kind": "nope"}]}'], "actionBundle"),
        (["--duration", "400d"], "--duration: must be at most 365 days ahead"),
        (["--fire-at", "2030-01-01T00:00:00Z", "--duration", "5m"], "not allowed with argument"),
    ],
)
def test_create_refuses_what_the_api_refuses(tenant: Tenant, args: list[str], message: str) -> None:
    refused("timers", "create", "--tenant", "acme", "--name", "bad", *args, match=message.replace("(", r"\("))
    assert not Timer.objects.exists()


def test_create_needs_an_existing_tenant_and_a_time(db: Any) -> None:
    refused("timers", "create", "--tenant", "nobody", "--name", "x", "--duration", "5m", match="no tenant 'nobody'")
    refused("timers", "create", "--tenant", "nobody", "--name", "x", match="one of the arguments --duration --fire-at")


def test_create_refuses_a_name_longer_than_the_api_allows(tenant: Tenant) -> None:
    refused("timers", "create", "--tenant", "acme", "--name", "n" * 201, "--duration", "5m", match="--name")


def test_list_filters_by_tenant_status_label_and_fire_time(tenant: Tenant, other_tenant: Tenant) -> None:
    now = timezone.now()
    make_timer(tenant=tenant, status="scheduled", name="a", fire_at=now + timedelta(hours=1), labels={"team": "ops"})
    make_timer(tenant=tenant, status="settled", name="b", fire_at=now - timedelta(hours=1), labels={"team": "ops"})
    make_timer(tenant=other_tenant, status="scheduled", name="c", fire_at=now + timedelta(hours=2))

    def names(*args: str) -> list[str]:
        return sorted(t["name"] for t in run_json("timers", "list", *args)["timers"])

    assert names() == ["a", "b", "c"]
    assert names("--tenant", "acme") == ["a", "b"]
    assert names("--status", "scheduled") == ["a", "c"]
    assert names("--status", "settled,scheduled", "--tenant", "globex") == ["c"]
    assert names("--label", "team=ops", "--status", "scheduled") == ["a"]
    assert names("--fire-after", (now + timedelta(minutes=90)).isoformat()) == ["c"]
    assert names("--fire-before", now.isoformat()) == ["b"]
    assert len(run_json("timers", "list", "--limit", "1")["timers"]) == 1


def test_list_prints_a_table_newest_first(tenant: Tenant) -> None:
    make_timer(tenant=tenant, status="scheduled", name="first", created_at=timezone.now() - timedelta(minutes=1))
    make_timer(tenant=tenant, status="settled", name="second", labels={"k": "v"}, lateness_ms=12)
    out, _ = run("timers", "list")
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ID", "TENANT", "NAME", "STATUS"]
    assert "second" in lines[1] and "12 ms" in lines[1] and "k=v" in lines[1]
    assert "first" in lines[2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--status", "exploded"], "--status: unknown status 'exploded'"),
        (["--fire-after", "yesterday"], "--fire-after: 'yesterday' is not an RFC 3339 timestamp"),
        (["--label", "team"], "--label 'team' must look like key=value"),
        (["--limit", "0"], "--limit must be from 1"),
        (["--tenant", "nobody"], "no tenant 'nobody'"),
    ],
)
def test_list_refuses_bad_filters(db: Any, args: list[str], message: str) -> None:
    refused("timers", "list", *args, match=message)


def test_show_has_the_timer_its_events_runs_and_attempts(tenant: Tenant) -> None:
    timer = make_timer(
        tenant=tenant, status="failed", name="nightly", failure_reason="actions failed: hook", settled_at=timezone.now()
    )
    TimerEvent.objects.create(timer=timer, kind="fired", occurred_at=timer.fire_at, state_version=3)
    run_row = make_run(timer=timer, action_id="hook", status="failed", attempts=1, last_error="HTTP 500")
    ActionAttempt.objects.create(
        run=run_row, number=1, started_at=timezone.now(), outcome="permanent_failure", http_status=500, error="HTTP 500"
    )
    out, _ = run("timers", "show", str(timer.id))
    assert "Failed at" in out and "Settled at" not in out
    assert "actions failed: hook" in out
    assert "Events:" in out and "fired" in out
    assert "Action runs:" in out and str(run_row.id) in out and "HTTP 500" in out
    assert "Attempts:" in out and "permanent_failure" in out

    data = run_json("timers", "show", str(timer.id))
    assert data["id"] == str(timer.id) and data["status"] == "failed"
    assert [e["kind"] for e in data["events"]] == ["fired"]
    assert data["actionRuns"][0]["actionId"] == "hook"
    assert data["actionRuns"][0]["attemptRecords"][0]["httpStatus"] == 500


def test_show_times_are_utc_to_the_millisecond(tenant: Tenant) -> None:
    timer = schedule_timer(tenant=tenant, in_=timedelta(minutes=5))
    out, _ = run("timers", "show", str(timer.id))
    assert f"Fire at        {timer.fire_at:%Y-%m-%dT%H:%M:%S}.{timer.fire_at.microsecond // 1000:03d}Z" in out


def test_show_refuses_unknown_ids_and_other_tenants(tenant: Tenant, other_tenant: Tenant) -> None:
    refused("timers", "show", "nope", match="not a timer id")
    refused("timers", "show", "00000000-0000-0000-0000-000000000000", match="no timer 00000000")
    theirs = make_timer(tenant=other_tenant, status="scheduled")
    refused("timers", "show", str(theirs.id), "--tenant", "acme", match="of tenant 'acme'")


def test_cancel_a_pending_timer_and_again_is_unchanged(tenant: Tenant) -> None:
    timer = schedule_timer(tenant=tenant, in_=timedelta(minutes=5))
    out, _ = run("timers", "cancel", str(timer.id), "--reason", "not needed", "--by", "alice")
    assert "Cancelled timer" in out
    timer.refresh_from_db()
    assert (timer.status, timer.cancel_reason, timer.cancelled_by) == ("cancelled", "not needed", "alice")
    again = run_json("timers", "cancel", str(timer.id))
    assert again["timers"][0]["status"] == "cancelled" and again["errors"] == []
    assert TimerEvent.objects.filter(timer=timer, kind="cancelled").count() == 1


def test_cancel_of_a_fired_timer_cancels_it_and_an_ended_one_is_left_unchanged(tenant: Tenant) -> None:
    fired = make_timer(tenant=tenant, status="fired")
    settled = make_timer(tenant=tenant, status="settled")
    out, _ = run("timers", "cancel", str(fired.id), str(settled.id))
    assert f"Cancelled timer {fired.id} (fired -> cancelled)." in out
    assert f"Timer {settled.id} was already settled; unchanged." in out
    fired.refresh_from_db()
    settled.refresh_from_db()
    assert (fired.status, settled.status) == ("cancelled", "settled")


def test_reschedule_moves_a_pending_timer_guarded_by_its_version(tenant: Tenant) -> None:
    timer = schedule_timer(tenant=tenant, in_=timedelta(minutes=5))
    refused(
        "timers", "reschedule", str(timer.id), "--duration", "1h", "--if-version", "7", match="since state version 7"
    )
    data = run_json("timers", "reschedule", str(timer.id), "--duration", "1h", "--if-version", "1")
    assert data["stateVersion"] == 2 and data["status"] == "scheduled"
    later = (timezone.now() + timedelta(days=30)).replace(microsecond=0)
    out, _ = run("timers", "reschedule", str(timer.id), "--fire-at", later.isoformat())
    assert f"now fires at {later:%Y-%m-%dT%H:%M:%S}.000Z" in out
    assert list(TimerEvent.objects.filter(timer=timer).values_list("kind", flat=True)) == [
        "created",
        "rescheduled",
        "rescheduled",
    ]


def test_reschedule_refuses_bad_times_and_terminal_timers(tenant: Tenant) -> None:
    timer = schedule_timer(tenant=tenant, in_=timedelta(minutes=5))
    refused(
        "timers",
        "reschedule",
        str(timer.id),
        "--fire-at",
        "2020-01-01T00:00:00Z",
        match="--fire-at: must be in the future",
    )
    refused("timers", "reschedule", str(timer.id), "--duration", "soon", match="--duration")
    done = make_timer(tenant=tenant, status="settled")
    refused("timers", "reschedule", str(done.id), "--duration", "5m", match="Timer is settled")


def test_fire_now_makes_a_pending_timer_due_and_armed(tenant: Tenant) -> None:
    timer = schedule_timer(tenant=tenant, in_=timedelta(hours=3))
    data = run_json("timers", "fire-now", str(timer.id))
    assert data["status"] == "armed"
    timer.refresh_from_db()
    assert timer.fire_at <= timezone.now()
    assert json.loads(json.dumps(list(TimerEvent.objects.filter(timer=timer).values_list("kind", flat=True)))) == [
        "created",
        "rescheduled",
        "armed",
    ]
    refused("timers", "fire-now", str(make_timer(tenant=tenant, status="cancelled").id), match="Timer is cancelled")
