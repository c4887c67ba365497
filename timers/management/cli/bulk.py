"""``minoots timers import FILE|-``: create many timers from JSON Lines, in batches, in-process.

A line is one timer: the body of ``POST /api/timers`` with an optional ``idempotencyKey`` (a
timer of ``POST /api/timers/batch``), for the tenant ``--tenant`` names. Lines are checked by the
batch endpoint's own input serializer and created ``--chunk`` at a time by
``services.timers_create_batch``, the function the endpoint calls (one transaction per chunk), so
a line gets what that timer would get in a batch request: created, its stored timer again (its
``idempotencyKey`` was used with the same body: a re-run creates nothing twice), or refused with
the API's reason, reported with its line number. Not ``minoots import``, which loads an export
(ids and history kept).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError
from rest_framework import exceptions

from timers import services
from timers.api.errors import validation_error_body
from timers.api.serializers import TimerBatchItemInput
from timers.management.cli.keys import tenant_existing
from timers.management.cli.output import Verb, progress_bar, write_json
from timers.management.cli.prune import add_progress_option
from timers.models import Tenant

DEFAULT_BY = "cli"


class LineRefused(Exception):
    """A line that makes no timer, with the status a batch request would have answered it."""

    def __init__(self, status: int, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.message, self.details = status, message, details


@dataclass(frozen=True)
class LineFailure:
    line: int
    status: int
    message: str
    details: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "status": self.status, "message": self.message, "details": self.details}


@dataclass
class Tally:
    lines: int = 0
    created: int = 0
    replayed: int = 0
    failures: list[LineFailure] = field(default_factory=list)


def _numbered(source: Iterable[bytes | str]) -> Iterator[tuple[int, str | None]]:
    """``(line number, text)`` of each line that is not blank; text None for one not UTF-8."""
    for number, raw in enumerate(source, start=1):
        try:
            text = raw if isinstance(raw, str) else raw.decode("utf-8")
        except UnicodeDecodeError:
            yield number, None
            continue
        if text.strip():
            yield number, text.removeprefix("\ufeff") if number == 1 else text


@contextmanager
def _source(path: str) -> Iterator[tuple[Iterator[tuple[int, str | None]], int | None]]:
    """The numbered lines of ``path`` (``-``: stdin) and how many there are (None for stdin)."""
    if path == "-":
        yield _numbered(getattr(sys.stdin, "buffer", sys.stdin)), None
        return
    try:
        source = open(path, "rb")
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with source:
        total = sum(1 for raw in source if raw.strip())
        source.seek(0)
        yield _numbered(source), total


def _item(checker: TimerBatchItemInput, tenant: Tenant, text: str | None) -> services.BatchItem:
    """The BatchItem of one line, checked as a timer of ``POST /api/timers/batch``; LineRefused otherwise."""
    if text is None:
        raise LineRefused(400, "line: is not UTF-8 text")
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise LineRefused(400, f"line: is not JSON ({exc})") from exc
    try:
        data = checker.run_validation(body)
    except exceptions.ValidationError as exc:
        error = validation_error_body(exc.detail)
        raise LineRefused(400, error["message"], error["details"]) from exc
    if data.get("tenantId") not in (None, tenant.id):
        raise LineRefused(403, f"tenantId: '{str(data['tenantId'])[:64]}' is not --tenant '{tenant.id}'")
    return TimerBatchItemInput.batch_item_from(data, body, requested_by=DEFAULT_BY)


def _create(tenant: Tenant, pending: list[tuple[int, services.BatchItem]], tally: Tally) -> None:
    outcomes = services.timers_create_batch(tenant=tenant, items=[item for _, item in pending], refuse_past=True)
    for (number, _), outcome in zip(pending, outcomes, strict=True):
        if outcome.timer is None:
            assert outcome.error is not None
            error = outcome.error
            tally.failures.append(LineFailure(number, error.status_code, error.message, error.details))
        elif outcome.created:
            tally.created += 1
        else:
            tally.replayed += 1


def import_lines(verb: Verb, opts: dict[str, Any]) -> None:
    tenant = tenant_existing(opts["tenant"])
    limit: int = settings.MINOOTS_BATCH_MAX
    chunk = limit if opts["chunk"] is None else opts["chunk"]
    if not 1 <= chunk <= limit:
        raise CommandError(f"--chunk must be from 1 to {limit} (MINOOTS_BATCH_MAX)")
    name = "stdin" if opts["input"] == "-" else opts["input"]
    checker = TimerBatchItemInput(tenant_id=tenant.id)
    tally = Tally()
    started = time.monotonic()
    with (
        _source(opts["input"]) as (lines, total),
        progress_bar(total=total, desc="importing", unit="timer", show=opts["progress"]) as bar,
    ):
        pending: list[tuple[int, services.BatchItem]] = []
        read = 0
        for number, text in lines:
            tally.lines += 1
            read += 1
            try:
                pending.append((number, _item(checker, tenant, text)))
            except LineRefused as exc:
                tally.failures.append(LineFailure(number, exc.status, exc.message, exc.details))
            if len(pending) == chunk:
                _create(tenant, pending, tally)
                bar.update(read)
                pending, read = [], 0
        if pending:
            _create(tenant, pending, tally)
        bar.update(read)
    elapsed = time.monotonic() - started
    _report(verb, opts, name, tally, elapsed)


def _report(verb: Verb, opts: dict[str, Any], name: str, tally: Tally, elapsed: float) -> None:
    failures = sorted(tally.failures, key=lambda f: f.line)
    rate = tally.created / elapsed if elapsed > 0 else 0.0
    if opts["json"]:
        write_json(
            verb,
            {
                "lines": tally.lines,
                "created": tally.created,
                "alreadyThere": tally.replayed,
                "failed": len(failures),
                "elapsedSeconds": round(elapsed, 3),
                "timersPerSecond": round(rate, 1),
                "errors": [f.as_dict() for f in failures],
            },
        )
    else:
        for failure in failures:
            verb.stderr.write(f"{name} line {failure.line}: {failure.message} ({failure.status})")
        verb.stdout.write(
            f"Created {tally.created} timer(s), {tally.replayed} already there (idempotencyKey), "
            f"{len(failures)} failed, of {tally.lines} line(s) in {elapsed:.2f} s ({rate:.0f} timers/s)."
        )
    if failures:
        first = failures[0]
        raise CommandError(
            f"{len(failures)} of {tally.lines} line(s) of {name} made no timer; the first, line {first.line}: "
            f"{first.message}"
        )


def register(verbs: Any, leaf: Any) -> None:
    p = leaf(
        verbs,
        "import",
        import_lines,
        "create timers from JSON Lines (one POST /api/timers body a line, optional idempotencyKey), in batches",
    )
    p.add_argument("input", metavar="FILE", help="JSON Lines, or - for stdin")
    p.add_argument("--tenant", required=True, help="an existing tenant: every line's")
    p.add_argument(
        "--chunk",
        type=int,
        metavar="N",
        help=f"timers per batch (one transaction each); default and most: MINOOTS_BATCH_MAX ({settings.MINOOTS_BATCH_MAX})",
    )
    add_progress_option(p)
