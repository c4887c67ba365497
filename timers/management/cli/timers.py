"""``minoots timers create|list|show|cancel|reschedule|fire-now|import``.

Create and reschedule go through the API's own input serializers, so a timer made here obeys
exactly the rules (grammar, sizes, labels, action parameters) of ``POST /api/timers``; import
(many timers from JSON Lines, ``timers.management.cli.bulk``) those of ``POST /api/timers/batch``.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from django.core.management.base import CommandError
from django.utils import timezone

from actions import selectors as action_selectors
from actions.models import ActionRun
from actions.serializers import ActionRunOutput
from timers import selectors, services
from timers.api.serializers import TimerCreateInput, TimerRescheduleInput
from timers.api.views import TimerListInput
from timers.management.cli import bulk
from timers.management.cli.keys import tenant_existing
from timers.management.cli.output import Verb, fields, option_message, table, utc, validation_error, write_json
from timers.models import Timer, TimerStatus
from timers.serializers import TimerEventOutput, timers_wire

DEFAULT_BY = "cli"
MAX_LIST = 10_000


def timer_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError as exc:
        raise CommandError(f"not a timer id (a UUID): {raw[:80]!r}") from exc


def timer_found(raw: str, *, tenant_id: str | None = None) -> Timer:
    tenant = tenant_existing(tenant_id) if tenant_id else None
    timer = selectors.timer_get(tenant=tenant, timer_id=timer_id(raw))
    if timer is None:
        raise CommandError(f"no timer {raw}" + (f" of tenant '{tenant_id}'" if tenant_id else ""))
    return timer


def labels_option(values: list[str] | None, option: str = "--label") -> dict[str, str]:
    """``key=value`` options as a dict (a key given twice is refused)."""
    labels: dict[str, str] = {}
    for raw in values or []:
        key, sep, value = raw.partition("=")
        if not sep or not key:
            raise CommandError(f"{option} '{raw[:100]}' must look like key=value")
        if key in labels:
            raise CommandError(f"{option} '{key[:100]}' is given twice")
        labels[key] = value
    return labels


def json_option(raw: str | None, option: str) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise CommandError(f"{option} is not valid JSON: {exc}") from exc


def _actions(opts: dict[str, Any]) -> dict[str, Any] | None:
    """The ``actionBundle`` the options ask for: ``--action-bundle`` as given, or one action per
    ``--webhook`` / ``--command`` / ``--file``."""
    bundle = json_option(opts["action_bundle"], "--action-bundle")
    actions: list[dict[str, Any]] = []
    if opts["webhook"]:
        actions.append({"id": "webhook", "kind": "webhook", "parameters": {"url": opts["webhook"]}})
    if opts["command"]:
        actions.append({"id": "command", "kind": "command", "parameters": {"argv": opts["command"]}})
    if (opts["file"] is None) != (opts["content"] is None):
        raise CommandError("--file and --content go together")
    if opts["file"] is not None:
        parameters = {"path": opts["file"], "content": opts["content"], "mode": opts["file_mode"]}
        actions.append({"id": "file", "kind": "file", "parameters": parameters})
    if bundle is not None and actions:
        raise CommandError("give --action-bundle or --webhook/--command/--file, not both")
    if actions:
        return {"actions": actions, "concurrency": len(actions)}
    return bundle if isinstance(bundle, dict) or bundle is None else {"actions": bundle}


def create(verb: Verb, opts: dict[str, Any]) -> None:
    tenant = tenant_existing(opts["tenant"])
    body: dict[str, Any] = {"name": opts["name"], "tenantId": tenant.id}
    if opts["duration"] is not None:
        body["duration"] = opts["duration"]
    if opts["fire_at"] is not None:
        body["fireAt"] = opts["fire_at"]
    if opts["labels"]:
        body["labels"] = labels_option(opts["labels"])
    if opts["metadata"] is not None:
        body["metadata"] = json_option(opts["metadata"], "--metadata")
    if opts["agent_binding"] is not None:
        body["agentBinding"] = json_option(opts["agent_binding"], "--agent-binding")
    bundle = _actions(opts)
    if bundle is not None:
        body["actionBundle"] = bundle
    if opts["requested_by"] is not None:
        body["requestedBy"] = opts["requested_by"]
    serializer = TimerCreateInput(data=body, tenant_id=tenant.id)
    if not serializer.is_valid():
        raise validation_error(serializer.errors)
    try:
        timer, _ = services.timer_create(
            tenant=tenant, spec=serializer.to_spec(requested_by=DEFAULT_BY), refuse_past=True
        )
    except services.ServiceError as exc:
        raise CommandError(option_message(exc.message)) from exc
    if opts["json"]:
        write_json(verb, timers_wire([timer])[0])
        return
    verb.stderr.write(f"Created timer {timer.id} ({timer.status}), due {utc(timer.fire_at)}.")
    verb.stdout.write(str(timer.id))


def _labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items()) or "-"


def list_(verb: Verb, opts: dict[str, Any]) -> None:
    tenant = tenant_existing(opts["tenant"]) if opts["tenant"] else None
    query = {
        key: value
        for key, value in (
            ("status", ",".join(opts["status"] or [])),
            ("fireAfter", opts["fire_after"]),
            ("fireBefore", opts["fire_before"]),
        )
        if value
    }
    params = TimerListInput(data=query)
    if not params.is_valid():
        raise validation_error(params.errors)
    if not 1 <= opts["limit"] <= MAX_LIST:
        raise CommandError(f"--limit must be from 1 to {MAX_LIST}")
    data = params.validated_data
    found = list(
        selectors.timers_list(
            tenant=tenant,
            status=data.get("status"),
            name=opts["name"],
            labels=list(labels_option(opts["labels"]).items()),
            fire_after=data.get("fireAfter"),
            fire_before=data.get("fireBefore"),
        )[: opts["limit"]]
    )
    if opts["json"]:
        write_json(verb, {"timers": timers_wire(found)})
        return
    if not found:
        verb.stderr.write("No timers match.")
        return
    rows = [
        (
            t.id,
            t.tenant_id,
            t.name[:40],
            t.status,
            utc(t.fire_at),
            utc(t.fired_at),
            "-" if t.lateness_ms is None else f"{t.lateness_ms} ms",
            _labels_text(t.labels)[:60],
        )
        for t in found
    ]
    verb.stdout.write(table(rows, ["ID", "TENANT", "NAME", "STATUS", "FIRE AT", "FIRED AT", "LATENESS", "LABELS"]))
    if len(found) == opts["limit"]:
        verb.stderr.write(f"(the newest {opts['limit']}; --limit shows more)")


def _ended(timer: Timer) -> tuple[str, str]:
    if timer.status == TimerStatus.CANCELLED:
        return "Cancelled at", utc(timer.cancelled_at)
    if timer.status == TimerStatus.FAILED:
        return "Failed at", utc(timer.settled_at)
    return "Settled at", utc(timer.settled_at)


def timer_fields(timer: Timer) -> str:
    pairs: list[tuple[str, Any]] = [
        ("ID", timer.id),
        ("Tenant", timer.tenant_id),
        ("Name", timer.name),
        ("Status", timer.status),
        ("State version", timer.state_version),
        ("Created at", utc(timer.created_at)),
        ("Fire at", utc(timer.fire_at)),
        ("Fired at", utc(timer.fired_at)),
        ("Lateness", "-" if timer.lateness_ms is None else f"{timer.lateness_ms} ms"),
        _ended(timer),
        ("Requested by", timer.requested_by or "-"),
        ("Labels", _labels_text(timer.labels)),
    ]
    if timer.status == TimerStatus.CANCELLED:
        pairs += [("Cancelled by", timer.cancelled_by or "-"), ("Cancel reason", timer.cancel_reason or "-")]
    if timer.failure_reason:
        pairs.append(("Failure reason", timer.failure_reason))
    if timer.metadata:
        pairs.append(("Metadata", json.dumps(timer.metadata)[:200]))
    return fields(pairs)


def show(verb: Verb, opts: dict[str, Any]) -> None:
    found = timer_found(opts["id"], tenant_id=opts["tenant"])
    timer = action_selectors.timer_get_with_runs(tenant=None, timer_id=found.id)
    assert timer is not None  # just found
    events = list(selectors.timer_events(timer=timer))
    runs: list[ActionRun] = list(timer.action_runs.all())
    if opts["json"]:
        wire = timers_wire([timer])[0]
        wire["actionRuns"] = json.loads(json.dumps(ActionRunOutput(runs, many=True).data, default=str))
        wire["events"] = json.loads(json.dumps(TimerEventOutput(events, many=True).data, default=str))
        write_json(verb, wire)
        return
    parts = [timer_fields(timer), "", "Events:"]
    parts.append(
        table(
            [
                (e.id, utc(e.occurred_at), e.kind, e.state_version, json.dumps(e.data)[:80] if e.data else "")
                for e in events
            ],
            ["ID", "AT", "KIND", "VERSION", "DATA"],
        )
    )
    parts += ["", "Action runs:" if runs else "Action runs: none"]
    if runs:
        rows = []
        for run in runs:
            rows.append(
                (
                    run.id,
                    run.action_id,
                    run.kind,
                    run.status,
                    run.attempts,
                    utc(run.next_attempt_at),
                    run.last_error[:60],
                )
            )
        parts.append(table(rows, ["RUN ID", "ACTION", "KIND", "STATUS", "ATTEMPTS", "NEXT ATTEMPT", "LAST ERROR"]))
        attempts = [
            (
                run.action_id,
                a.number,
                utc(a.started_at),
                a.outcome or "running",
                a.http_status if a.http_status is not None else a.exit_code,
                "-" if a.duration_ms is None else f"{a.duration_ms} ms",
                a.error[:60],
            )
            for run in runs
            for a in run.attempt_records.all()
        ]
        if attempts:
            parts += ["", "Attempts:"]
            parts.append(table(attempts, ["ACTION", "#", "STARTED", "OUTCOME", "HTTP/EXIT", "DURATION", "ERROR"]))
    verb.stdout.write("\n".join(parts))


def cancel(verb: Verb, opts: dict[str, Any]) -> None:
    timers = [timer_found(raw, tenant_id=opts["tenant"]) for raw in opts["ids"]]
    results: list[Timer] = []
    failures: list[str] = []
    for timer in timers:
        before = timer.status
        try:
            results.append(services.timer_cancel(timer=timer, reason=opts["reason"], by=opts["by"]))
        except services.ServiceError as exc:
            failures.append(f"{timer.id}: {exc.message}")
            continue
        if not opts["json"]:
            if before in (TimerStatus.SCHEDULED, TimerStatus.ARMED, TimerStatus.FIRED):
                # A fired timer too: what has not started of its actions is stopped.
                verb.stdout.write(f"Cancelled timer {timer.id} ({before} -> cancelled).")
            else:
                verb.stdout.write(f"Timer {timer.id} was already {timer.status}; unchanged.")
    if opts["json"]:
        write_json(verb, {"timers": timers_wire(results), "errors": failures})
    if failures:
        raise CommandError("; ".join(failures))


def _rescheduled(verb: Verb, opts: dict[str, Any], timer: Timer, before: str) -> None:
    if opts["json"]:
        write_json(verb, timers_wire([timer])[0])
        return
    verb.stdout.write(
        f"Timer {timer.id} now fires at {utc(timer.fire_at)} (was {before}); {timer.status}, "
        f"state version {timer.state_version}."
    )


def reschedule(verb: Verb, opts: dict[str, Any]) -> None:
    body = {k: v for k, v in (("duration", opts["duration"]), ("fireAt", opts["fire_at"])) if v is not None}
    serializer = TimerRescheduleInput(data=body)
    if not serializer.is_valid():
        raise validation_error(serializer.errors)
    timer = timer_found(opts["id"], tenant_id=opts["tenant"])
    before = utc(timer.fire_at)
    try:
        timer = services.timer_reschedule(
            timer=timer,
            duration=serializer.validated_data.get("duration"),
            fire_at=serializer.validated_data.get("fireAt"),
            expected_version=opts["if_version"],
            by=opts["by"],
            refuse_past=True,
        )
    except services.ServiceError as exc:
        raise CommandError(option_message(exc.message)) from exc
    _rescheduled(verb, opts, timer, before)


def fire_now(verb: Verb, opts: dict[str, Any]) -> None:
    timer = timer_found(opts["id"], tenant_id=opts["tenant"])
    before = utc(timer.fire_at)
    try:
        # A fireAt already past from an internal caller means now (timer_reschedule's contract).
        timer = services.timer_reschedule(
            timer=timer, fire_at=timezone.now(), expected_version=opts["if_version"], by=opts["by"]
        )
    except services.ServiceError as exc:
        raise CommandError(exc.message) from exc
    _rescheduled(verb, opts, timer, before)


def register(nouns: Any, leaf: Any) -> None:
    noun = nouns.add_parser("timers", help="timers: create, list, show, cancel, reschedule, fire-now, import")
    verbs = noun.add_subparsers(
        dest="verb", required=True, metavar="{create,list,show,cancel,reschedule,fire-now,import}"
    )

    p = leaf(verbs, "create", create, "create a timer with the API's rules; prints its id")
    p.add_argument("--tenant", required=True, help="an existing tenant")
    p.add_argument("--name", required=True)
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--duration", help="'30s', '5m', '1h30m', 'PT15M' or milliseconds")
    when.add_argument("--fire-at", help="RFC 3339 with an offset, e.g. 2030-01-01T14:00:00Z")
    p.add_argument("--label", action="append", dest="labels", metavar="KEY=VALUE", help="repeatable")
    p.add_argument("--metadata", metavar="JSON", help="a JSON object")
    p.add_argument("--agent-binding", metavar="JSON", help="a JSON object")
    p.add_argument("--webhook", metavar="URL", help="POST the timer to URL when it fires")
    p.add_argument(
        "--command", nargs="+", metavar="ARG", help="run this argv when it fires (MINOOTS_COMMAND_ALLOWLIST)"
    )
    p.add_argument("--file", metavar="PATH", help="write --content to PATH below MINOOTS_FILE_ROOT/<tenant>/")
    p.add_argument("--content", metavar="TEXT")
    p.add_argument("--file-mode", choices=["write", "append"], default="write")
    p.add_argument("--action-bundle", metavar="JSON", help="the API's actionBundle, instead of the three above")
    p.add_argument("--requested-by", help=f"who asks (default: {DEFAULT_BY})")

    p = leaf(verbs, "list", list_, "list timers, newest first")
    p.add_argument("--tenant", help="only this tenant's timers")
    p.add_argument("--status", action="append", help="repeatable or comma-separated")
    p.add_argument("--name", help="this exact name")
    p.add_argument("--label", action="append", dest="labels", metavar="KEY=VALUE", help="repeatable, all must match")
    p.add_argument("--fire-after", metavar="RFC3339", help="fireAt at or after")
    p.add_argument("--fire-before", metavar="RFC3339", help="fireAt before")
    p.add_argument("--limit", type=int, default=50, help=f"at most this many (default 50, up to {MAX_LIST})")

    p = leaf(verbs, "show", show, "one timer with its events, action runs and attempts")
    p.add_argument("id")
    p.add_argument("--tenant", help="refuse a timer of another tenant")

    p = leaf(verbs, "cancel", cancel, "cancel pending timers (terminal ones are left unchanged)")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--reason", default="")
    p.add_argument("--by", default=DEFAULT_BY)
    p.add_argument("--tenant", help="refuse timers of another tenant")

    for name, handler, text in (
        ("reschedule", reschedule, "move a pending timer to --fire-at, or --duration from now"),
        ("fire-now", fire_now, "make a pending timer due now"),
    ):
        p = leaf(verbs, name, handler, text)
        p.add_argument("id")
        if name == "reschedule":
            when = p.add_mutually_exclusive_group(required=True)
            when.add_argument("--duration", help="from now: '30s', '5m', 'PT15M' or milliseconds")
            when.add_argument("--fire-at", help="RFC 3339 with an offset")
        p.add_argument("--if-version", type=int, metavar="N", help="only if the timer is still at state version N")
        p.add_argument("--by", default=DEFAULT_BY)
        p.add_argument("--tenant", help="refuse a timer of another tenant")

    bulk.register(verbs, leaf)
