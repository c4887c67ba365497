"""The raw-SQL fast paths of actions, each beside the ORM twin SQLite runs (or the caller's).

A batch of 100 runs used to cost about 20 statements and most of a run's CPU in the ORM; here
a claim is a locking read, one UPDATE (which also closes attempts left open by dead workers)
and one INSERT of the attempt rows, and a batch's successes one UPDATE that writes their
events too. Only ``actions.transitions`` and ``actions.execution`` call these. The SQL
interpolates only model table and column names, never input.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from django.db import connection
from django.db.models import Model
from django.db.models.base import ModelState

from actions.models import ActionAttempt, ActionRun, AttemptOutcome
from timers.models import Timer, TimerEvent

M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class AttemptRecord:
    """How one attempt ended, ready to store."""

    attempt_id: int
    outcome: str
    http_status: int | None
    exit_code: int | None
    duration_ms: int
    error: str
    output_excerpt: str


def attempts_close(records: Sequence[AttemptRecord], *, at: datetime) -> None:
    """Store the outcome of each attempt still open; attempts already closed are left alone.

    Postgres: one ``UPDATE ... FROM (VALUES ...)``; Django's bulk_update builds a CASE per
    field and row, which for a burst costs more CPU than the HTTP calls did.
    """
    if not records:
        return
    if connection.vendor != "postgresql":
        still_open = set(
            ActionAttempt.objects.filter(pk__in=[r.attempt_id for r in records], finished_at__isnull=True).values_list(
                "pk", flat=True
            )
        )
        ActionAttempt.objects.bulk_update(
            [
                ActionAttempt(
                    pk=r.attempt_id,
                    finished_at=at,
                    outcome=r.outcome,
                    http_status=r.http_status,
                    exit_code=r.exit_code,
                    duration_ms=r.duration_ms,
                    error=r.error,
                    output_excerpt=r.output_excerpt,
                )
                for r in records
                if r.attempt_id in still_open
            ],
            ["finished_at", "outcome", "http_status", "exit_code", "duration_ms", "error", "output_excerpt"],
        )
        return
    from psycopg2.extras import execute_values  # only importable where the Postgres driver is installed

    # On the raw psycopg2 cursor (execute_values needs it): wrapped, so errors stay Django's.
    with connection.cursor() as cur, connection.wrap_database_errors:
        execute_values(
            cur.cursor,
            f"""UPDATE {ActionAttempt._meta.db_table} AS a
                   SET finished_at = v.finished_at, outcome = v.outcome, error = v.error,
                       http_status = v.http_status::smallint, exit_code = v.exit_code::integer,
                       duration_ms = v.duration_ms::integer, output_excerpt = v.output_excerpt
                  FROM (VALUES %s) AS v(id, finished_at, outcome, http_status, exit_code, duration_ms, error, output_excerpt)
                 WHERE a.id = v.id AND a.finished_at IS NULL""",
            [
                (r.attempt_id, at, r.outcome, r.http_status, r.exit_code, r.duration_ms, r.error, r.output_excerpt)
                for r in records
            ],
        )


# --- claim ---------------------------------------------------------------------------------------


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def claim_candidates(run_ids: Sequence[UUID]) -> list[tuple[UUID, str, str]]:
    """(run id, status, tenant id) of the claimable runs of ``run_ids``, row-locked, skipping
    runs locked elsewhere (Postgres; call in the claim's transaction).

    Claimable: ``pending`` and due on the database clock, or ``running`` past its lease (its
    worker died) unless its timer was cancelled (``transitions.runs_cancel_lost`` ends those).
    """
    run_table, timer_table = ActionRun._meta.db_table, Timer._meta.db_table
    with connection.cursor() as cur:
        cur.execute(
            f"""SELECT r.id, r.status, t.tenant_id
                  FROM {run_table} r JOIN {timer_table} t ON t.id = r.timer_id
                 WHERE r.id = ANY(%s::uuid[])
                   AND ((r.status = 'pending' AND r.next_attempt_at <= statement_timestamp())
                        OR (r.status = 'running' AND r.lease_expires_at < statement_timestamp()
                            AND t.status <> 'cancelled'))
                   FOR UPDATE OF r SKIP LOCKED""",
            [list(run_ids)],
        )
        return [(_uuid(r[0]), r[1], r[2]) for r in cur.fetchall()]


@dataclass(frozen=True)
class Claimed:
    """A run the claim moved to ``running`` (with its timer attached), its new attempt's row,
    and the number of the last attempt a dead worker left open on it (0: none)."""

    run: ActionRun
    attempt_id: int
    last_lost: int


def runs_mark_running(
    run_ids: Sequence[UUID], *, worker: str, lease: timedelta, lost_error: str, at: datetime
) -> list[Claimed]:
    """One statement (Postgres, in the claim's transaction, ``run_ids`` locked by
    ``claim_candidates``): each run ``running`` with one more attempt, a lease of ``lease`` from
    the database's now(), ``worker``; the first run holds the claim's worker slot
    (``next_attempt_at`` NULL), the others wait behind it (now()). The same statement closes
    the attempts a dead worker left open on these runs as transient failures (``lost_error``, at
    ``at``) and opens each run's new attempt row (started ``at``). Return the runs with their
    timers, as model instances, in no particular order.
    """
    run_fields, timer_fields = ActionRun._meta.concrete_fields, Timer._meta.concrete_fields
    # Aliased: both tables have an ``id``.
    run_columns = ", ".join(f"r.{f.column} AS r{i}" for i, f in enumerate(run_fields))
    timer_columns = ", ".join(f"t.{f.column} AS t{i}" for i, f in enumerate(timer_fields))
    attempts = next(i for i, f in enumerate(run_fields) if f.column == "attempts")
    sql = f"""
        WITH lost AS (
            UPDATE {ActionAttempt._meta.db_table} a
               SET finished_at = %s, outcome = %s, error = %s
             WHERE a.run_id = ANY(%s::uuid[]) AND a.finished_at IS NULL
            RETURNING a.run_id, a.number
        ), claimed AS (
            UPDATE {ActionRun._meta.db_table} r
               SET status = 'running', attempts = r.attempts + 1, worker = %s,
                   lease_expires_at = statement_timestamp() + make_interval(secs => %s),
                   next_attempt_at = CASE WHEN r.id = %s THEN NULL ELSE statement_timestamp() END
              FROM {Timer._meta.db_table} t
             WHERE r.id = ANY(%s::uuid[]) AND t.id = r.timer_id
            RETURNING {run_columns}, {timer_columns}
        ), opened AS (
            INSERT INTO {ActionAttempt._meta.db_table} (run_id, number, started_at, outcome, error, output_excerpt)
            SELECT claimed.r0, claimed.r{attempts}, %s, '', '', '' FROM claimed
            RETURNING run_id, id
        )
        SELECT claimed.*, opened.id,
               COALESCE((SELECT max(lost.number) FROM lost WHERE lost.run_id = claimed.r0), 0)
          FROM claimed JOIN opened ON opened.run_id = claimed.r0
    """
    ids = list(run_ids)
    with connection.cursor() as cur:
        cur.execute(
            sql, [at, AttemptOutcome.TRANSIENT.value, lost_error, ids, worker, lease.total_seconds(), ids[0], ids, at]
        )
        rows = cur.fetchall()
    assert run_fields[0].column == "id"  # r0, read by the statement above
    n_run = len(run_fields)
    claimed = []
    for row in rows:
        run = _instance(ActionRun, row[:n_run])
        timer = _instance(Timer, row[n_run:-2])
        ActionRun.timer.field.set_cached_value(run, timer)
        claimed.append(Claimed(run=run, attempt_id=int(row[-2]), last_lost=int(row[-1])))
    return claimed


# --- conclude ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Success:
    """A held run's successful attempt: its run, attempt number, summary, event data, and the
    attempt's record."""

    run_id: UUID
    number: int
    summary: str
    event: dict[str, Any]
    attempt: AttemptRecord


def runs_succeed_with_events(successes: Sequence[Success], *, at: datetime) -> list[UUID]:
    """running -> succeeded for the runs of ``successes`` still ``running`` at that attempt
    number (row-locked by this UPDATE; a run another worker took over is left alone, and so is
    its attempt, which the new owner's claim recorded as lost), the ``action.succeeded`` event of
    each run that moved, at its timer's current state version, in the order given, and its
    attempt's record (``attempts_close``'s columns; attempts already closed are left alone).
    One statement (Postgres): the attempts are updated only for runs it moved, so after their
    runs, as every path locks them; return the ids that moved."""
    if not successes:
        return []
    run_table, timer_table = ActionRun._meta.db_table, Timer._meta.db_table
    with connection.cursor() as cur:
        cur.execute(
            f"""
            WITH v AS (
                SELECT * FROM unnest(%s::uuid[], %s::integer[], %s::text[], %s::jsonb[], %s::bigint[],
                                     %s::integer[], %s::integer[], %s::integer[], %s::text[], %s::text[])
                       WITH ORDINALITY
                       AS v(id, number, summary, data, attempt_id, http_status, exit_code, duration_ms, error,
                            output_excerpt, ord)
            ), moved AS (
                UPDATE {run_table} r
                   SET status = 'succeeded', finished_at = %s, lease_expires_at = NULL, last_error = '',
                       result_summary = v.summary
                  FROM v
                 WHERE r.id = v.id AND r.status = 'running' AND r.attempts = v.number
                RETURNING r.id, r.timer_id
            ), written AS (
                INSERT INTO {TimerEvent._meta.db_table} (timer_id, kind, occurred_at, state_version, data)
                SELECT moved.timer_id, 'action.succeeded', %s, t.state_version, v.data
                  FROM moved JOIN v ON v.id = moved.id JOIN {timer_table} t ON t.id = moved.timer_id
                 ORDER BY v.ord
            ), closed AS (
                UPDATE {ActionAttempt._meta.db_table} a
                   SET finished_at = %s, outcome = %s, http_status = v.http_status, exit_code = v.exit_code,
                       duration_ms = v.duration_ms, error = v.error, output_excerpt = v.output_excerpt
                  FROM moved JOIN v ON v.id = moved.id
                 WHERE a.id = v.attempt_id AND a.finished_at IS NULL
            )
            SELECT id FROM moved
            """,
            [
                [s.run_id for s in successes],
                [s.number for s in successes],
                [s.summary for s in successes],
                [json.dumps(s.event) for s in successes],
                [s.attempt.attempt_id for s in successes],
                [s.attempt.http_status for s in successes],
                [s.attempt.exit_code for s in successes],
                [s.attempt.duration_ms for s in successes],
                [s.attempt.error for s in successes],
                [s.attempt.output_excerpt for s in successes],
                at,
                at,
                at,
                AttemptOutcome.SUCCEEDED.value,
            ],
        )
        return [_uuid(r[0]) for r in cur.fetchall()]


@dataclass(frozen=True)
class TimerRuns:
    """Where a timer's runs stand after a conclude: whether a top-level run waits for a
    concurrency slot, whether any is pending or running, the failed ones' action ids (top-level
    first, in position order)."""

    waiting: bool
    busy: bool
    failed: tuple[str, ...]


def timers_runs(timer_ids: Sequence[UUID]) -> dict[UUID, TimerRuns]:
    """``TimerRuns`` of each of ``timer_ids`` (Postgres: one grouped read; SQLite: the three
    reads it stands for)."""
    if not timer_ids:
        return {}
    waiting: set[UUID] = set()
    busy: set[UUID] = set()
    failed: dict[UUID, tuple[str, ...]] = {}
    if is_postgres():
        with connection.cursor() as cur:
            cur.execute(
                f"""SELECT timer_id,
                           bool_or(escalation_level = 0 AND status = 'pending' AND next_attempt_at IS NULL),
                           bool_or(status IN ('pending', 'running')),
                           array_agg(action_id ORDER BY escalation_level, position) FILTER (WHERE status = 'failed')
                      FROM {ActionRun._meta.db_table}
                     WHERE timer_id = ANY(%s::uuid[])
                     GROUP BY timer_id""",
                [list(timer_ids)],
            )
            for timer_id, is_waiting, is_busy, failed_actions in cur.fetchall():
                timer_id = _uuid(timer_id)
                if is_waiting:
                    waiting.add(timer_id)
                if is_busy:
                    busy.add(timer_id)
                if failed_actions:
                    failed[timer_id] = tuple(failed_actions)
    else:
        runs = ActionRun.objects.filter(timer_id__in=timer_ids)
        waiting = set(
            runs.filter(escalation_level=0, status="pending", next_attempt_at__isnull=True).values_list(
                "timer_id", flat=True
            )
        )
        busy = set(runs.filter(status__in=["pending", "running"]).values_list("timer_id", flat=True))
        names: dict[UUID, list[str]] = {}
        for timer_id, action_id in (
            runs.filter(status="failed").order_by("escalation_level", "position").values_list("timer_id", "action_id")
        ):
            names.setdefault(timer_id, []).append(action_id)
        failed = {t: tuple(a) for t, a in names.items()}
    return {t: TimerRuns(waiting=t in waiting, busy=t in busy, failed=failed.get(t, ())) for t in timer_ids}


# --- rows to instances ---------------------------------------------------------------------------


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _instance(model: type[M], values: Sequence[Any]) -> M:
    """A model instance from a row of its concrete columns, each value converted as the ORM
    would (``from_db_value``: the JSON columns), as ``Model.from_db`` leaves it but without
    ``Model.__init__``'s per-field work (most of a claim's CPU for 100 runs; this project
    connects no pre_init / post_init receiver)."""
    instance = model.__new__(model)
    attributes = instance.__dict__
    for (attname, converters), value in zip(_columns(model), values, strict=True):
        for converter in converters:
            value = converter(value, None, connection)
        attributes[attname] = value
    instance._state = ModelState()
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance


@functools.cache
def _columns(model: type[Model]) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """(attribute name, value converters) of each concrete field of ``model``, in column order."""
    return tuple((f.attname, tuple(f.get_db_converters(connection))) for f in model._meta.concrete_fields)
