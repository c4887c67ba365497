"""The raw-SQL fast paths of the timers domain, each beside the plain twin SQLite runs.

Only the transitions in ``timers.services`` call these; each statement does one thing
(claims, arms, or finishes) and returns the rows it changed, so the service writes the
events and counts the metrics. The SQL interpolates only model table names and a fixed
locking clause, never input.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from django.db import connection, connections, router
from django.utils import timezone

from timers.models import ApiKey, Tenant, Timer, TimerEvent, has_actions
from timers.ports import ClaimedTimer


@dataclass(frozen=True)
class EventRow:
    timer_id: UUID
    kind: str
    occurred_at: datetime
    state_version: int
    data: dict[str, Any]


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def _lock_clause() -> str:
    return "FOR UPDATE SKIP LOCKED" if is_postgres() else ""


def _db_datetime(moment: datetime) -> Any:
    """A datetime in the form the backend stores (SQLite keeps naive UTC text)."""
    return connection.ops.adapt_datetimefield_value(moment)


def _db_id(timer_id: UUID) -> Any:
    """A timer id as the backend stores it (SQLite: 32 hex digits)."""
    return Timer._meta.pk.get_db_prep_value(timer_id, connection)


def _as_uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def _as_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def lateness_ms(*, fire_at: datetime, fired_at: datetime) -> int:
    """Whole milliseconds from ``fire_at`` to ``fired_at`` (never negative), exactly."""
    return max(0, (fired_at - fire_at) // timedelta(milliseconds=1))


# --- claim: armed -> fired --------------------------------------------------------------------


def _claimed(row: Sequence[Any]) -> ClaimedTimer:
    """A claim's ``RETURNING id, tenant_id, fire_at, fired_at, lateness_ms, state_version,
    action_bundle`` row."""
    return ClaimedTimer(
        id=_as_uuid(row[0]),
        tenant_id=row[1],
        fire_at=_as_datetime(row[2]),
        fired_at=_as_datetime(row[3]),
        lateness_ms=int(row[4]),
        state_version=int(row[5]),
        action_bundle=_as_json(row[6]),
    )


def first_armed_fire_ats(*, start: datetime, end: datetime, limit: int = 1) -> list[datetime]:
    """The earliest ``limit`` ``fire_at`` of armed timers in [start, end), ascending: what a
    tick asks before its first claim and after a claim. Through the pending partial index; the
    ORM compiling this on every tick cost about as much as the claim's own Python."""
    with connection.cursor() as cur:
        cur.execute(
            f"SELECT fire_at FROM {Timer._meta.db_table}"
            " WHERE status = 'armed' AND fire_at >= %s AND fire_at < %s ORDER BY fire_at LIMIT %s",
            [_db_datetime(start), _db_datetime(end), limit],
        )
        rows = cur.fetchall()
    return [_as_datetime(row[0]) for row in rows]


def first_armed_fire_ats_and_now(*, start: datetime, end: datetime, limit: int) -> tuple[list[datetime], datetime]:
    """``first_armed_fire_ats`` and the database's clock in the same statement (Postgres
    ``statement_timestamp()``, the clock the claim compares ``fire_at`` with; on SQLite, the
    embedded database, this process's clock, which is the claim's there too)."""
    if not is_postgres():
        return first_armed_fire_ats(start=start, end=end, limit=limit), timezone.now()
    with connection.cursor() as cur:
        cur.execute(
            f"SELECT statement_timestamp(), ARRAY(SELECT fire_at FROM {Timer._meta.db_table}"
            " WHERE status = 'armed' AND fire_at >= %s AND fire_at < %s ORDER BY fire_at LIMIT %s)",
            [_db_datetime(start), _db_datetime(end), limit],
        )
        now, fire_ats = cur.fetchone()
    return [_as_datetime(f) for f in fire_ats], _as_datetime(now)


def claim_due_and_settle(*, limit: int) -> tuple[list[ClaimedTimer], list[tuple[UUID, str]]]:
    """armed -> fired for up to ``limit`` due timers, oldest first, exactly once; each claimed
    timer's ``fired`` event; and fired -> settled (with its
    ``settled`` event, at the instant it fired) for those without actions: (the claimed timers,
    (id, tenant_id) of those settled). What a tick does with each batch, in one transaction.

    Postgres: one statement. The timers without actions go from armed to settled in one row
    update (both transitions happen in this transaction, so nobody ever saw them fired): a
    second UPDATE of the same rows rewrote every index entry of each row a second time, a third
    of a burst's time. SQLite: the claim, the events, then the settle.
    """
    if not is_postgres():
        claimed = _claim_due_sqlite(limit)
        _insert_fired_events_sqlite(claimed)
        without = [c.id for c in claimed if not has_actions(c.action_bundle)]
        settled = (
            finish_fired(timer_ids=without, status="settled", at=claimed[0].fired_at, failure_reason="", event_data={})
            if without
            else []
        )
        return claimed, settled
    table = Timer._meta.db_table
    events = TimerEvent._meta.db_table
    # has_actions() in SQL: an object whose "actions" is a non-empty array.
    acts = (
        "CASE WHEN jsonb_typeof(t.action_bundle -> 'actions') = 'array' "
        "THEN jsonb_array_length(t.action_bundle -> 'actions') > 0 ELSE false END"
    )
    with connection.cursor() as cur:
        cur.execute(
            f"""
            WITH due AS (
                SELECT id FROM {table}
                 WHERE status = 'armed' AND fire_at <= statement_timestamp()
                 ORDER BY fire_at LIMIT %s FOR UPDATE SKIP LOCKED
            ), claimed AS (
                UPDATE {table} t
                   SET status = CASE WHEN {acts} THEN 'fired' ELSE 'settled' END,
                       fired_at = statement_timestamp(),
                       settled_at = CASE WHEN {acts} THEN NULL ELSE statement_timestamp() END,
                       state_version = t.state_version + CASE WHEN {acts} THEN 1 ELSE 2 END,
                       lateness_ms = GREATEST(0, FLOOR(EXTRACT(EPOCH FROM (statement_timestamp() - t.fire_at)) * 1000))::bigint
                  FROM due
                 WHERE t.id = due.id AND t.status = 'armed'
                RETURNING t.id, t.tenant_id, t.fire_at, t.fired_at, t.lateness_ms,
                          t.state_version - CASE WHEN t.status = 'settled' THEN 1 ELSE 0 END AS fired_version,
                          t.action_bundle, t.status
            ), written AS (
                INSERT INTO {events} (timer_id, kind, occurred_at, state_version, data)
                SELECT id, kind, fired_at, version, data FROM (
                    SELECT 0 AS step, id, 'fired' AS kind, fired_at, fired_version AS version,
                           jsonb_build_object('latenessMs', lateness_ms) AS data, fire_at
                      FROM claimed
                    UNION ALL
                    SELECT 1, id, 'settled', fired_at, fired_version + 1, '{{}}'::jsonb, fire_at
                      FROM claimed WHERE status = 'settled'
                ) steps ORDER BY step, fire_at, id
            )
            SELECT id, tenant_id, fire_at, fired_at, lateness_ms, fired_version, action_bundle, status
              FROM claimed ORDER BY fire_at
            """,
            [limit],
        )
        rows = cur.fetchall()
    claimed = [_claimed(r) for r in rows]
    settled = [(c.id, c.tenant_id) for c, r in zip(claimed, rows, strict=True) if r[7] == "settled"]
    return claimed, settled


def _claim_due_sqlite(limit: int) -> list[ClaimedTimer]:
    # The read and the updates are one claim only inside one (IMMEDIATE) transaction.
    if not connection.in_atomic_block:
        raise RuntimeError("claim_due_and_settle must run inside transaction.atomic()")
    table = Timer._meta.db_table
    now = timezone.now()
    with connection.cursor() as cur:
        cur.execute(
            f"SELECT id, tenant_id, fire_at, state_version, action_bundle FROM {table}"
            " WHERE status = 'armed' AND fire_at <= %s ORDER BY fire_at LIMIT %s",
            [_db_datetime(now), limit],
        )
        due = [
            ClaimedTimer(
                id=_as_uuid(r[0]),
                tenant_id=r[1],
                fire_at=_as_datetime(r[2]),
                fired_at=now,
                lateness_ms=lateness_ms(fire_at=_as_datetime(r[2]), fired_at=now),
                state_version=int(r[3]) + 1,
                action_bundle=_as_json(r[4]),
            )
            for r in cur.fetchall()
        ]
        if due:
            cur.executemany(
                f"UPDATE {table} SET status = 'fired', fired_at = %s, lateness_ms = %s,"
                " state_version = state_version + 1 WHERE id = %s AND status = 'armed'",
                [(_db_datetime(now), c.lateness_ms, _db_id(c.id)) for c in due],
            )
            if cur.rowcount != len(due):  # another writer got in between: not IMMEDIATE?
                raise RuntimeError(f"claimed {cur.rowcount} of {len(due)} due timers; is the transaction IMMEDIATE?")
    return due


# --- arm: scheduled -> armed --------------------------------------------------------------------


def arm_due(*, horizon_end: datetime, limit: int) -> list[tuple[UUID, datetime, int]]:
    """scheduled -> armed for up to ``limit`` timers due before ``horizon_end``: (id, fire_at, state_version)."""
    table = Timer._meta.db_table
    with connection.cursor() as cur:
        cur.execute(
            f"""
            UPDATE {table} SET status = 'armed', state_version = state_version + 1
             WHERE id IN (SELECT id FROM {table}
                           WHERE status = 'scheduled' AND fire_at <= %s
                           ORDER BY fire_at LIMIT %s {_lock_clause()})
            RETURNING id, fire_at, state_version
            """,
            [_db_datetime(horizon_end), limit],
        )
        rows = cur.fetchall()
    return [(_as_uuid(r[0]), _as_datetime(r[1]), int(r[2])) for r in rows]


# --- finish: fired -> settled / failed ----------------------------------------------------------


def finish_fired(
    *, timer_ids: Sequence[UUID], status: str, at: datetime, failure_reason: str, event_data: dict[str, Any]
) -> list[tuple[UUID, str]]:
    """fired -> ``status`` for those of ``timer_ids`` still fired, each with its ``status`` event
    (``event_data``, at ``at``): (id, tenant_id) of those that moved.

    Postgres: one statement, the event rows written from the updated ones. SQLite: the update,
    then the events in one INSERT.
    """
    if not timer_ids:
        return []
    table = Timer._meta.db_table
    if is_postgres():
        with connection.cursor() as cur:
            cur.execute(
                f"""
                WITH done AS (
                    UPDATE {table} SET status = %s, settled_at = %s, failure_reason = %s, state_version = state_version + 1
                     WHERE status = 'fired' AND id = ANY(%s::uuid[])
                    RETURNING id, tenant_id, state_version
                ), written AS (
                    INSERT INTO {TimerEvent._meta.db_table} (timer_id, kind, occurred_at, state_version, data)
                    SELECT id, %s, %s, state_version, %s::jsonb FROM done
                )
                SELECT id, tenant_id FROM done
                """,
                [status, at, failure_reason, [str(t) for t in timer_ids], status, at, json.dumps(event_data)],
            )
            return [(_as_uuid(r[0]), r[1]) for r in cur.fetchall()]
    marks = ", ".join(["%s"] * len(timer_ids))
    with connection.cursor() as cur:
        cur.execute(
            f"""
            UPDATE {table} SET status = %s, settled_at = %s, failure_reason = %s, state_version = state_version + 1
             WHERE status = 'fired' AND id IN ({marks})
            RETURNING id, tenant_id, state_version
            """,
            [status, _db_datetime(at), failure_reason, *(_db_id(t) for t in timer_ids)],
        )
        rows = [(_as_uuid(r[0]), r[1], int(r[2])) for r in cur.fetchall()]
    insert_events([EventRow(timer_id, status, at, version, event_data) for timer_id, _, version in rows])
    return [(timer_id, tenant_id) for timer_id, tenant_id, _ in rows]


def _insert_fired_events_sqlite(claimed: Sequence[ClaimedTimer]) -> None:
    """The ``fired`` event of each claimed timer (its lateness as data), at its claim's version
    (Postgres writes them in the claim's own statement)."""
    insert_events(
        [EventRow(c.id, "fired", c.fired_at, c.state_version, {"latenessMs": c.lateness_ms}) for c in claimed]
    )


# --- create: many timers at once ----------------------------------------------------------------

# Every column a new timer sets, with the type its unnest() array has.
_NEW_TIMER_COLUMNS = (
    ("id", "uuid"),
    ("tenant_id", "text"),
    ("name", "text"),
    ("status", "text"),
    ("duration_ms", "bigint"),
    ("created_at", "timestamptz"),
    ("fire_at", "timestamptz"),
    ("requested_by", "text"),
    ("metadata", "jsonb"),
    ("labels", "jsonb"),
    ("action_bundle", "jsonb"),
    ("agent_binding", "jsonb"),
    ("state_version", "integer"),
    ("idempotency_key", "text"),
    ("request_hash", "text"),
)


def _json_or_null(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def insert_timers(timers: Sequence[Timer]) -> None:
    """Insert new timers (not fired, settled nor cancelled) as they are given. Postgres: one
    INSERT ... SELECT FROM unnest() of one array per column, whatever their number (the driver
    adapts arrays in C; bulk_create prepares every field of every row through the ORM, and
    execute_values formats every row in Python: most of a batch create's time)."""
    if not timers:
        return
    if not is_postgres():
        Timer.objects.bulk_create(timers, batch_size=500)
        return
    with connection.cursor() as cur:
        cur.execute(*_timers_insert(timers))
    _stored(timers)


def _timers_insert(timers: Sequence[Timer]) -> tuple[str, list[list[Any]]]:
    columns: list[list[Any]] = [
        [str(t.id) for t in timers],
        [t.tenant_id for t in timers],
        [t.name for t in timers],
        [str(t.status) for t in timers],
        [t.duration_ms for t in timers],
        [t.created_at for t in timers],
        [t.fire_at for t in timers],
        [t.requested_by for t in timers],
        [json.dumps(t.metadata) for t in timers],
        [json.dumps(t.labels) for t in timers],
        [_json_or_null(t.action_bundle) for t in timers],
        [_json_or_null(t.agent_binding) for t in timers],
        [t.state_version for t in timers],
        [t.idempotency_key for t in timers],
        [t.request_hash for t in timers],
    ]
    names = ", ".join(name for name, _ in _NEW_TIMER_COLUMNS)
    arrays = ", ".join(f"%s::{kind}[]" for _, kind in _NEW_TIMER_COLUMNS)
    sql = (
        f"INSERT INTO {Timer._meta.db_table} ({names}, cancel_reason, cancelled_by, failure_reason) "
        f"SELECT *, '', '', '' FROM unnest({arrays})"
    )
    return sql, columns


def _stored(timers: Sequence[Timer]) -> None:
    for t in timers:  # stored now, as bulk_create leaves them
        t._state.adding = False
        t._state.db = connection.alias


# --- events ------------------------------------------------------------------------------------


def insert_events(rows: Sequence[EventRow]) -> None:
    """Append event rows; one INSERT ... SELECT FROM unnest() on Postgres (bulk_create builds a
    model per row)."""
    if not rows:
        return
    if not is_postgres():
        TimerEvent.objects.bulk_create(
            [
                TimerEvent(
                    timer_id=r.timer_id,
                    kind=r.kind,
                    occurred_at=r.occurred_at,
                    state_version=r.state_version,
                    data=r.data,
                )
                for r in rows
            ]
        )
        return
    with connection.cursor() as cur:
        cur.execute(*_events_insert(rows))


def _events_insert(rows: Sequence[EventRow]) -> tuple[str, list[list[Any]]]:
    sql = (
        f"INSERT INTO {TimerEvent._meta.db_table} (timer_id, kind, occurred_at, state_version, data) "
        "SELECT * FROM unnest(%s::uuid[], %s::text[], %s::timestamptz[], %s::integer[], %s::jsonb[])"
    )
    return sql, [
        [str(r.timer_id) for r in rows],
        [r.kind for r in rows],
        [r.occurred_at for r in rows],
        [r.state_version for r in rows],
        [json.dumps(r.data) for r in rows],
    ]


# --- API keys --------------------------------------------------------------------------------


def api_key_with_tenant(prefix: str) -> ApiKey | None:
    """``ApiKey.objects.select_related("tenant").filter(prefix=prefix).first()`` (the prefix is
    unique), with the query built once per database: the ORM compiles it anew on every request,
    a third of authenticating one."""
    database = connections[router.db_for_read(ApiKey)]
    query = _KEY_QUERIES.get(database.alias)
    if query is None:
        query = _KEY_QUERIES[database.alias] = _KeyQuery(database)
    return query.fetch(database, prefix)


_CONVERTERS_ATTR = "_minoots_api_key_converters"


class _KeyQuery:
    """The SQL of one database alias; the converters of each of its connections (a connection
    belongs to one thread, and the converters may read it)."""

    def __init__(self, database: Any) -> None:
        quote = database.ops.quote_name
        self.key_fields = ApiKey._meta.concrete_fields
        self.tenant_fields = Tenant._meta.concrete_fields
        self.columns = [(ApiKey._meta.db_table, f) for f in self.key_fields]
        self.columns += [(Tenant._meta.db_table, f) for f in self.tenant_fields]
        self.sql = (
            f"SELECT {', '.join(f'{quote(table)}.{quote(f.column)}' for table, f in self.columns)} "
            f"FROM {quote(ApiKey._meta.db_table)} JOIN {quote(Tenant._meta.db_table)} "
            f"ON {quote(Tenant._meta.db_table)}.{quote(Tenant._meta.pk.column)} = "
            f"{quote(ApiKey._meta.db_table)}.{quote('tenant_id')} "
            f"WHERE {quote(ApiKey._meta.db_table)}.{quote('prefix')} = %s"
        )

    def _converters(self, database: Any) -> list[list[Any]]:
        """What the ORM applies to each column read (JSON parsing; SQLite's datetimes, ...),
        kept on the connection itself: they are its bound methods, so a cache keyed by the
        connection would keep every connection (one per thread or greenlet) alive."""
        converters: list[list[Any]] | None = database.__dict__.get(_CONVERTERS_ATTR)
        if converters is None:
            converters = database.__dict__[_CONVERTERS_ATTR] = [
                [*database.ops.get_db_converters(f.get_col(table)), *f.get_db_converters(database)]
                for table, f in self.columns
            ]
        return converters

    def fetch(self, database: Any, prefix: str) -> ApiKey | None:
        with database.cursor() as cur:
            cur.execute(self.sql, [prefix])
            row = cur.fetchone()
        if row is None:
            return None
        values = list(row)
        for i, converters in enumerate(self._converters(database)):
            for convert in converters:
                values[i] = convert(values[i], None, database)
        split = len(self.key_fields)
        key = ApiKey.from_db(database.alias, [f.attname for f in self.key_fields], values[:split])
        tenant = Tenant.from_db(database.alias, [f.attname for f in self.tenant_fields], values[split:])
        ApiKey.tenant.field.set_cached_value(key, tenant)
        return key


_KEY_QUERIES: dict[str, _KeyQuery] = {}
