"""``minoots export`` / ``minoots import``: timers as JSON Lines, one timer a line with its events
and action runs, so a tenant can move between installations.

A line is the timer's API form (``GET /api/timers/{id}``'s fields) plus ``events`` (kind,
occurredAt, stateVersion, data) and ``actionRuns`` (every column of a run, with its
``attemptRecords``). Times keep their microseconds. Import keeps every id, creates the tenant
when missing (with a new webhook signing secret: secrets are never exported), and is
idempotent by id: a timer already stored is left as it is, so importing twice changes
nothing. Every line is checked before anything is stored; the first bad one is refused,
naming its line number, and nothing is imported.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from django.core.management.base import CommandError
from django.db import transaction
from rest_framework import serializers

from actions.bundle import parse_bundle
from actions.errors import ParameterError
from actions.models import ActionAttempt, ActionRun, AttemptOutcome, RunStatus
from actions.transitions import runs_import
from timers import keys, selectors, services
from timers.api.errors import _first_message
from timers.api.serializers import MAX_NAME, TimerCreateInput, parse_rfc3339, storable_json_problem
from timers.management.cli.keys import tenant_existing, tenant_id_checked
from timers.management.cli.output import Verb, progress, progress_bar, write_json
from timers.management.cli.prune import add_progress_option
from timers.models import PENDING_STATUSES, Timer, TimerEvent, TimerStatus
from timers.serializers import TimerEventOutput, timers_wire

CHUNK = 500


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _run_json(run: ActionRun) -> dict[str, Any]:
    return {
        "id": str(run.id),
        "actionId": run.action_id,
        "kind": run.kind,
        "parameters": run.parameters,
        "position": run.position,
        "escalationLevel": run.escalation_level,
        "escalatedFrom": None if run.escalated_from_id is None else str(run.escalated_from_id),
        "status": run.status,
        "attempts": run.attempts,
        "retryBase": run.retry_base,
        "nextAttemptAt": _iso(run.next_attempt_at),
        "leaseExpiresAt": _iso(run.lease_expires_at),
        "lastError": run.last_error,
        "resultSummary": run.result_summary,
        "createdAt": _iso(run.created_at),
        "finishedAt": _iso(run.finished_at),
        "attemptRecords": [
            {
                "number": a.number,
                "startedAt": _iso(a.started_at),
                "finishedAt": _iso(a.finished_at),
                "outcome": a.outcome,
                "httpStatus": a.http_status,
                "exitCode": a.exit_code,
                "durationMs": a.duration_ms,
                "error": a.error,
                "outputExcerpt": a.output_excerpt,
            }
            for a in run.attempt_records.all()
        ],
    }


def export_lines(timers: list[Timer]) -> Iterator[str]:
    """One JSON line per timer (with its events and runs), for timers loaded with both."""
    for timer, wire in zip(timers, timers_wire(timers), strict=True):
        events = TimerEventOutput(list(timer.events.all()), many=True).data
        wire["events"] = [{k: v for k, v in e.items() if k != "id"} for e in json.loads(json.dumps(events))]
        wire["actionRuns"] = [_run_json(r) for r in timer.action_runs.all()]
        yield json.dumps(wire, ensure_ascii=False, separators=(",", ":"))


@contextmanager
def _open_out(verb: Verb, path: str) -> Iterator[Callable[[str], Any]]:
    """A function writing text to ``path``, or to the command's stdout for ``-``."""
    if path == "-":
        yield lambda text: verb.stdout.write(text, ending="")
        return
    with open(path, "w", encoding="utf-8") as out:
        yield out.write


def export(verb: Verb, opts: dict[str, Any]) -> None:
    tenant = tenant_existing(opts["tenant"]) if opts["tenant"] else None
    qs = selectors.timers_list(tenant=tenant, status=opts["status"] or None).order_by("created_at", "id")
    total = qs.count()
    ids = qs.values_list("pk", flat=True)
    count = 0
    try:
        with (
            _open_out(verb, opts["output"]) as write,
            progress_bar(total=total, desc="exporting", unit="timer", show=opts["progress"]) as bar,
        ):
            chunk: list[UUID] = []
            for timer_id in ids.iterator(chunk_size=CHUNK):
                chunk.append(timer_id)
                if len(chunk) == CHUNK:
                    count += _export_chunk(write, chunk)
                    bar.update(len(chunk))
                    chunk = []
            if chunk:
                count += _export_chunk(write, chunk)
                bar.update(len(chunk))
    except OSError as exc:
        raise CommandError(f"cannot write {opts['output']}: {exc.strerror or exc}") from exc
    summary = {"exported": count, "output": opts["output"]}
    if opts["json"] and opts["output"] != "-":
        write_json(verb, summary)
    elif opts["json"]:
        verb.stderr.write(json.dumps(summary))
    else:
        verb.stderr.write(f"Exported {count} timer(s) to {'stdout' if opts['output'] == '-' else opts['output']}.")


def _export_chunk(write: Callable[[str], Any], ids: list[UUID]) -> int:
    timers = list(
        Timer.objects.filter(pk__in=ids)
        .prefetch_related("events", "action_runs__attempt_records")
        .order_by("created_at", "id")
    )
    for line in export_lines(timers):
        write(line + "\n")
    return len(timers)


# --- import ---------------------------------------------------------------------------------


class LineError(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")


_WORDS: dict[Any, str] = {str: "a string", int: "an integer", dict: "an object", list: "a list"}


def _field(
    obj: dict[str, Any], name: str, kind: type | tuple[type, ...], *, nullable: bool = False, path: str = ""
) -> Any:
    where = f"{path}{name}"
    if name not in obj:
        raise LineError(where, "is missing")
    value = obj[name]
    if value is None and nullable:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise LineError(where, f"must be {_WORDS.get(kind, 'another type')}" + (" or null" if nullable else ""))
    return value


def _text(
    obj: dict[str, Any], name: str, *, max_length: int | None = None, path: str = "", nullable: bool = False
) -> str:
    value = _field(obj, name, str, nullable=nullable, path=path)
    if value is None:
        return ""
    if max_length is not None and len(value) > max_length:
        raise LineError(f"{path}{name}", f"is longer than {max_length} characters")
    return str(value)


def _optional_int(obj: dict[str, Any], name: str, *, path: str = "", minimum: int = 0) -> int | None:
    value = _field(obj, name, int, nullable=True, path=path)
    if value is not None and value < minimum:
        raise LineError(f"{path}{name}", f"must be at least {minimum}")
    return None if value is None else int(value)


def _int(obj: dict[str, Any], name: str, *, path: str = "", minimum: int = 0) -> int:
    value = _optional_int(obj, name, path=path, minimum=minimum)
    if value is None:
        raise LineError(f"{path}{name}", "must be an integer")
    return value


def _time(obj: dict[str, Any], name: str, *, path: str = "", nullable: bool = False) -> datetime | None:
    value = _field(obj, name, str, nullable=nullable, path=path)
    if value is None:
        return None
    try:
        return parse_rfc3339(value)
    except serializers.ValidationError as exc:
        raise LineError(f"{path}{name}", _first_message(exc.detail)) from exc


def _choice(obj: dict[str, Any], name: str, choices: list[str], *, path: str = "", blank: bool = False) -> str:
    value = _text(obj, name, path=path)
    if value not in choices and not (blank and value == ""):
        raise LineError(f"{path}{name}", f"'{value[:40]}' is not one of {', '.join(choices)}")
    return value


def _checked(name: str, validate: Callable[[Any], Any], value: Any) -> Any:
    """``validate(value)``: one of the API's field validators; LineError naming the field."""
    try:
        return validate(value)
    except serializers.ValidationError as exc:
        raise LineError(name, _first_message(exc.detail)) from exc


def _required_time(obj: dict[str, Any], name: str, *, path: str = "") -> datetime:
    value = _time(obj, name, path=path)
    assert value is not None  # not nullable
    return value


def parse_line(raw: str) -> tuple[Timer, list[TimerEvent], list[ActionRun], list[ActionAttempt]]:
    """The rows of one exported line, unsaved; LineError naming the field otherwise."""
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise LineError("line", f"is not JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise LineError("line", "must be a JSON object")
    problem = storable_json_problem(obj)
    if problem:
        raise LineError("line", problem)
    try:
        timer_id = UUID(_text(obj, "id"))
    except ValueError as exc:
        raise LineError("id", "is not a UUID") from exc
    tenant_id = _text(obj, "tenantId")
    try:
        tenant_id_checked(tenant_id)
    except CommandError as exc:
        raise LineError("tenantId", str(exc)) from exc
    status = _choice(obj, "status", list(TimerStatus.values))
    checker = TimerCreateInput(tenant_id=tenant_id)
    labels = _checked("labels", checker.validate_labels, _field(obj, "labels", dict))
    metadata = _checked("metadata", checker.validate_metadata, _field(obj, "metadata", dict))
    agent_binding = _checked(
        "agentBinding", checker.validate_agentBinding, _field(obj, "agentBinding", dict, nullable=True)
    )
    bundle = _field(obj, "actionBundle", dict, nullable=True)
    if bundle is not None and status in PENDING_STATUSES:
        # It has yet to run here: the destination's rules on actions apply (allow-lists, roots).
        bundle = _checked("actionBundle", checker.validate_actionBundle, bundle)
    elif bundle is not None:
        try:
            parse_bundle(bundle)
        except ParameterError as exc:
            raise LineError(exc.field, exc.message) from exc
    timer = Timer(
        id=timer_id,
        tenant_id=tenant_id,
        name=_text(obj, "name", max_length=MAX_NAME),
        status=status,
        duration_ms=_int(obj, "durationMs"),
        created_at=_required_time(obj, "createdAt"),
        fire_at=_required_time(obj, "fireAt"),
        requested_by=_text(obj, "requestedBy", max_length=200),
        metadata=metadata,
        labels=labels,
        action_bundle=bundle,
        agent_binding=agent_binding,
        fired_at=_time(obj, "firedAt", nullable=True),
        lateness_ms=_optional_int(obj, "latenessMs", minimum=-(2**62)),
        settled_at=_time(obj, "settledAt", nullable=True),
        cancelled_at=_time(obj, "cancelledAt", nullable=True),
        cancel_reason=_text(obj, "cancelReason", max_length=500, nullable=True),
        cancelled_by=_text(obj, "cancelledBy", max_length=200, nullable=True),
        failure_reason=_text(obj, "failureReason", nullable=True),
        state_version=_int(obj, "stateVersion", minimum=1),
    )
    events = []
    for i, item in enumerate(_field(obj, "events", list)):
        path = f"events[{i}]."
        if not isinstance(item, dict):
            raise LineError(f"events[{i}]", "must be an object")
        events.append(
            TimerEvent(
                timer_id=timer_id,
                kind=_text(item, "kind", max_length=40, path=path),
                occurred_at=_required_time(item, "occurredAt", path=path),
                state_version=_int(item, "stateVersion", path=path),
                data=_field(item, "data", dict, path=path),
            )
        )
    runs, attempts = _parse_runs(_field(obj, "actionRuns", list), timer_id)
    return timer, events, runs, attempts


def _parse_runs(items: list[Any], timer_id: UUID) -> tuple[list[ActionRun], list[ActionAttempt]]:
    runs: list[ActionRun] = []
    attempts: list[ActionAttempt] = []
    ids: set[UUID] = set()
    for i, item in enumerate(items):
        path = f"actionRuns[{i}]."
        if not isinstance(item, dict):
            raise LineError(f"actionRuns[{i}]", "must be an object")
        try:
            run_id = UUID(_text(item, "id", path=path))
            parent_raw = _field(item, "escalatedFrom", str, nullable=True, path=path)
            parent = None if parent_raw is None else UUID(parent_raw)
        except ValueError as exc:
            raise LineError(f"{path}id", "is not a UUID") from exc
        if parent is not None and parent not in {r.id for r in runs}:
            raise LineError(f"{path}escalatedFrom", "names no earlier run of this timer")
        ids.add(run_id)
        run = ActionRun(
            id=run_id,
            timer_id=timer_id,
            action_id=_text(item, "actionId", max_length=100, path=path),
            kind=_text(item, "kind", max_length=32, path=path),
            parameters=_field(item, "parameters", dict, path=path),
            position=_int(item, "position", path=path),
            escalation_level=_int(item, "escalationLevel", path=path),
            escalated_from_id=parent,
            status=_choice(item, "status", list(RunStatus.values), path=path),
            attempts=_int(item, "attempts", path=path),
            retry_base=_int(item, "retryBase", path=path),
            next_attempt_at=_time(item, "nextAttemptAt", nullable=True, path=path),
            lease_expires_at=_time(item, "leaseExpiresAt", nullable=True, path=path),
            last_error=_text(item, "lastError", path=path),
            result_summary=_text(item, "resultSummary", path=path),
            finished_at=_time(item, "finishedAt", nullable=True, path=path),
        )
        # auto_now_add would overwrite it on insert; pre_save keeps a value set after init.
        run.created_at = _required_time(item, "createdAt", path=path)
        runs.append(run)
        for j, rec in enumerate(_field(item, "attemptRecords", list, path=path)):
            apath = f"{path}attemptRecords[{j}]."
            if not isinstance(rec, dict):
                raise LineError(f"{path}attemptRecords[{j}]", "must be an object")
            attempts.append(
                ActionAttempt(
                    run_id=run_id,
                    number=_int(rec, "number", path=apath, minimum=1),
                    started_at=_required_time(rec, "startedAt", path=apath),
                    finished_at=_time(rec, "finishedAt", nullable=True, path=apath),
                    outcome=_choice(rec, "outcome", list(AttemptOutcome.values), path=apath, blank=True),
                    http_status=_optional_int(rec, "httpStatus", path=apath),
                    exit_code=_optional_int(rec, "exitCode", path=apath, minimum=-(2**31)),
                    duration_ms=_optional_int(rec, "durationMs", path=apath),
                    error=_text(rec, "error", path=apath),
                    output_excerpt=_text(rec, "outputExcerpt", path=apath),
                )
            )
    return runs, attempts


@contextmanager
def _input(path: str) -> Iterator[Path]:
    """A file to read twice (checked, then imported): ``path``, or stdin spooled to a temporary file."""
    if path != "-":
        if not Path(path).is_file():
            raise CommandError(f"no such file: {path}")
        yield Path(path)
        return
    with tempfile.NamedTemporaryFile("w+", encoding="utf-8", suffix=".jsonl") as spool:
        shutil.copyfileobj(sys.stdin, spool)
        spool.flush()
        yield Path(spool.name)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as source:
        for number, line in enumerate(source, start=1):
            if line.strip():
                yield number, line


def _parsed(
    path: Path, name: str
) -> Iterator[tuple[int, tuple[Timer, list[TimerEvent], list[ActionRun], list[ActionAttempt]]]]:
    try:
        for number, line in _lines(path):
            try:
                yield number, parse_line(line)
            except LineError as exc:
                raise CommandError(f"{name} line {number}: {exc}; nothing imported") from exc
    except UnicodeDecodeError as exc:
        raise CommandError(f"{name} is not UTF-8 text ({exc.reason}); nothing imported") from exc


def import_(verb: Verb, opts: dict[str, Any]) -> None:
    name = "stdin" if opts["input"] == "-" else opts["input"]
    with _input(opts["input"]) as path:
        total = 0
        tenants: set[str] = set()
        seen: set[UUID] = set()
        for number, (timer, _, _, _) in _parsed(path, name):
            if timer.id in seen:
                raise CommandError(
                    f"{name} line {number}: id: timer {timer.id} is on an earlier line too; nothing imported"
                )
            seen.add(timer.id)
            tenants.add(timer.tenant_id)
            total += 1
        del seen
        created_tenants = [t for t in sorted(tenants) if keys.tenant_get_or_create(tenant_id=t)[1]]
        imported = runs_stored = 0
        chunk: list[tuple[Timer, list[TimerEvent], list[ActionRun], list[ActionAttempt]]] = []
        items = progress(_parsed(path, name), total=total, desc="importing", unit="timer", show=opts["progress"])
        for _, parsed in items:
            chunk.append(parsed)
            if len(chunk) == CHUNK:
                stored, runs = _import_chunk(chunk)
                imported, runs_stored, chunk = imported + stored, runs_stored + runs, []
        if chunk:
            stored, runs = _import_chunk(chunk)
            imported, runs_stored = imported + stored, runs_stored + runs
    summary = {
        "lines": total,
        "imported": imported,
        "unchanged": total - imported,
        "runsImported": runs_stored,
        "tenantsCreated": created_tenants,
    }
    if opts["json"]:
        write_json(verb, summary)
        return
    verb.stdout.write(
        f"Imported {imported} timer(s) with {runs_stored} action run(s); {total - imported} already here, unchanged."
        + (f" Created tenant(s): {', '.join(created_tenants)}." if created_tenants else "")
    )


def _import_chunk(chunk: list[tuple[Timer, list[TimerEvent], list[ActionRun], list[ActionAttempt]]]) -> tuple[int, int]:
    with transaction.atomic():
        stored = set(services.timers_import(timers=[c[0] for c in chunk], events=[e for c in chunk for e in c[1]]))
        runs = runs_import(
            runs=[r for c in chunk if c[0].id in stored for r in c[2]],
            attempts=[a for c in chunk if c[0].id in stored for a in c[3]],
        )
    return len(stored), runs


def register(nouns: Any, leaf: Any) -> None:
    p = leaf(nouns, "export", export, "write timers as JSON Lines (one a line, with events and runs)")
    p.add_argument("--tenant", help="only this tenant's timers")
    p.add_argument("--status", action="append", choices=list(TimerStatus.values), help="repeatable")
    p.add_argument("--output", "-o", default="-", metavar="PATH", help="a file (default: stdout)")
    add_progress_option(p)

    p = leaf(nouns, "import", import_, "read an export: idempotent by id, tenants created when missing")
    p.add_argument("input", metavar="PATH", help="a JSON Lines export, or - for stdin")
    add_progress_option(p)
