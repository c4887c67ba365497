"""``minoots timers import FILE|-``: many timers from JSON Lines, the batch endpoint's rules and service."""

from __future__ import annotations

import io
import json
import re
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from tests.commands.conftest import refused, run, run_json
from timers import services
from timers.models import Tenant, Timer, TimerEvent, TimerStatus

SUMMARY = re.compile(
    r"^Created (\d+) timer\(s\), (\d+) already there \(idempotencyKey\), (\d+) failed, of (\d+) line\(s\) "
    r"in \d+\.\d\d s \(\d+ timers/s\)\.$"
)


def _jsonl(path: Path, *lines: Any) -> str:
    """Write ``lines`` (objects as JSON, strings as they are) one a line; return the path."""
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


def _summary(out: str) -> tuple[int, int, int, int]:
    match = SUMMARY.match(out.strip())
    assert match, out
    created, replayed, failed, lines = (int(g) for g in match.groups())
    return created, replayed, failed, lines


def _failing(*args: str) -> tuple[str, str, CommandError]:
    """Run ``manage.py minoots ARGS``, which must exit 1; return (stdout, stderr, the error)."""
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("minoots", *args, stdout=out, stderr=err)
    assert caught.value.returncode == 1 and "\n" not in str(caught.value)
    return out.getvalue(), err.getvalue(), caught.value


def test_every_line_becomes_a_timer_with_the_apis_fields(tenant: Tenant, tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "t.jsonl",
        {"name": "soon", "duration": "30s", "labels": {"team": "ops"}, "metadata": {"ticket": 7}},
        {"name": "later", "fireAt": (timezone.now() + timedelta(days=2)).isoformat(), "requestedBy": "ops-bot"},
        {
            "name": "hook",
            "duration": 600000,
            "tenantId": "acme",
            "actionBundle": {"actions": [{"id": "a", "kind": "webhook", "parameters": {"url": "https://x.test/h"}}]},
        },
    )

    out, err = run("timers", "import", path, "--tenant", "acme")

    assert _summary(out) == (3, 0, 0, 3) and err == ""
    soon, later, hook = (Timer.objects.get(name=n) for n in ("soon", "later", "hook"))
    assert soon.status == TimerStatus.ARMED and soon.labels == {"team": "ops"} and soon.metadata == {"ticket": 7}
    assert later.status == TimerStatus.SCHEDULED and later.requested_by == "ops-bot"
    assert soon.requested_by == "cli" and hook.duration_ms == 600_000 and hook.tenant_id == "acme"
    assert hook.action_bundle is not None and hook.action_bundle["actions"][0]["kind"] == "webhook"
    assert TimerEvent.objects.filter(timer=soon).count() == 2  # created, armed


def test_lines_are_created_chunk_by_chunk_through_the_batch_service(
    tenant: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    real = services.timers_create_batch

    def counted(**kwargs: Any) -> list[services.BatchOutcome]:
        sizes.append(len(kwargs["items"]))
        return real(**kwargs)

    monkeypatch.setattr(services, "timers_create_batch", counted)
    path = _jsonl(tmp_path / "t.jsonl", *({"name": f"t{i}", "duration": "1h"} for i in range(25)))

    data = run_json("timers", "import", path, "--tenant", "acme", "--chunk", "10")

    assert sizes == [10, 10, 5]
    assert (data["lines"], data["created"], data["alreadyThere"], data["failed"], data["errors"]) == (25, 25, 0, 0, [])
    assert data["elapsedSeconds"] >= 0 and data["timersPerSecond"] >= 0
    assert sorted(Timer.objects.values_list("name", flat=True)) == sorted(f"t{i}" for i in range(25))


def test_each_bad_line_is_reported_by_its_number_the_others_are_created_and_the_exit_is_1(
    tenant: Tenant, other_tenant: Tenant, tmp_path: Path
) -> None:
    path = _jsonl(
        tmp_path / "t.jsonl",
        {"name": "ok-1", "duration": "1h"},
        {"name": "bad", "duration": "soon"},
        "",
        "{not json",
        {"name": "elsewhere", "duration": "1h", "tenantId": "globex"},
        {"name": "typo", "duraton": "1h"},
        {"name": "past", "fireAt": "2020-01-01T00:00:00Z"},
        {"name": "ok-2", "duration": "2h"},
    )

    out, err, error = _failing("timers", "import", path, "--tenant", "acme")

    assert _summary(out) == (2, 0, 5, 7)  # the blank line is no timer, but it is counted in the numbers
    reported = err.splitlines()
    assert reported[0].startswith(f"{path} line 2: duration: 'soon' is not a duration;")
    assert reported[0].endswith(" (400)")
    assert reported[1:] == [
        f"{path} line 4: line: is not JSON (Expecting property name enclosed in double quotes: line 1 column 2 "
        "(char 1)) (400)",
        f"{path} line 5: tenantId: 'globex' is not --tenant 'acme' (403)",
        f"{path} line 6: duraton: unknown field; allowed fields: tenantId, requestedBy, name, duration, fireAt, "
        "metadata, labels, actionBundle, agentBinding, ecosystem, idempotencyKey (400)",
        f"{path} line 7: fireAt: must be in the future (400)",
    ]
    assert str(error).startswith(f"5 of 7 line(s) of {path} made no timer; the first, line 2: duration:")
    assert sorted(Timer.objects.values_list("name", flat=True)) == ["ok-1", "ok-2"]
    assert not Timer.objects.filter(tenant=other_tenant).exists()


def test_a_rerun_of_lines_with_idempotency_keys_creates_nothing_again(tenant: Tenant, tmp_path: Path) -> None:
    lines = [{"name": f"t{i}", "duration": "1h", "idempotencyKey": f"run-42-{i}"} for i in range(5)]
    path = _jsonl(tmp_path / "t.jsonl", *lines)
    first, _ = run("timers", "import", path, "--tenant", "acme", "--chunk", "2")
    ids = set(Timer.objects.values_list("id", flat=True))

    again, _ = run("timers", "import", path, "--tenant", "acme")

    assert _summary(first) == (5, 0, 0, 5) and _summary(again) == (0, 5, 0, 5)
    assert set(Timer.objects.values_list("id", flat=True)) == ids

    changed = _jsonl(tmp_path / "changed.jsonl", *lines[:4], {**lines[4], "duration": "2h"}, {"name": "new"})
    data = json.loads(_failing("timers", "import", changed, "--tenant", "acme", "--json")[0])
    assert (data["created"], data["alreadyThere"], data["failed"]) == (0, 4, 2)
    conflict, invalid = data["errors"]
    assert conflict["line"] == 5 and conflict["status"] == 409
    assert conflict["message"] == "Idempotency-Key was already used with a different request body"
    assert conflict["details"]["timerId"] == str(Timer.objects.get(name="t4").id)
    assert invalid == {
        "line": 6,
        "status": 400,
        "message": "duration: give exactly one of 'duration' or 'fireAt'",
        "details": {"duration": ["give exactly one of 'duration' or 'fireAt'"]},
    }
    assert Timer.objects.count() == 5


def test_a_line_imported_with_a_key_is_the_same_request_as_that_timer_sent_to_the_batch_api(
    tenant: Tenant, client: APIClient, tmp_path: Path
) -> None:
    line = {"name": "shared", "duration": "1h", "labels": {"team": "ops"}, "idempotencyKey": "shared-1"}
    run("timers", "import", _jsonl(tmp_path / "t.jsonl", line), "--tenant", "acme")

    answer = client.post("/api/timers/batch", {"timers": [line]}, format="json").json()

    assert answer["results"][0]["status"] == 200
    assert answer["results"][0]["timer"]["id"] == str(Timer.objects.get().id)


def test_lines_over_the_tenants_quota_fail_with_its_limit(tenant: Tenant, tmp_path: Path) -> None:
    tenant.max_active_timers = 3
    tenant.save()
    path = _jsonl(tmp_path / "t.jsonl", *({"name": f"t{i}", "duration": "1h"} for i in range(5)))

    out, err, _ = _failing("timers", "import", path, "--tenant", "acme", "--chunk", "2")

    assert _summary(out) == (3, 0, 2, 5)
    assert err.splitlines()[0] == f"{path} line 4: Tenant 'acme' has 3 active timers, its limit (429)"
    assert Timer.objects.count() == 3


def test_import_reads_stdin_and_a_line_that_is_not_utf8(
    tenant: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"name": "piped", "duration": "1h"}\n'))
    assert _summary(run("timers", "import", "-", "--tenant", "acme")[0]) == (1, 0, 0, 1)

    binary = tmp_path / "latin1.jsonl"
    binary.write_bytes(b'\xef\xbb\xbf{"name": "bom", "duration": "1h"}\n{"name": "caf\xe9", "duration": "1h"}\n')
    out, err, _ = _failing("timers", "import", str(binary), "--tenant", "acme")
    assert _summary(out) == (1, 0, 1, 2) and err.strip() == f"{binary} line 2: line: is not UTF-8 text (400)"
    assert sorted(Timer.objects.values_list("name", flat=True)) == ["bom", "piped"]


def test_import_refuses_an_unknown_tenant_a_missing_file_and_a_chunk_over_the_batch_limit(
    tenant: Tenant, tmp_path: Path
) -> None:
    path = _jsonl(tmp_path / "t.jsonl", {"name": "x", "duration": "1h"})
    refused("timers", "import", path, "--tenant", "nobody", match="nobody")
    refused("timers", "import", str(tmp_path / "missing.jsonl"), "--tenant", "acme", match="cannot read")
    refused("timers", "import", path, "--tenant", "acme", "--chunk", "1001", match="--chunk must be from 1 to 1000")
    refused("timers", "import", path, "--tenant", "acme", "--chunk", "0", match="--chunk must be from 1 to 1000")
    assert not Timer.objects.exists()
