"""The raw-SQL fast path of actions: closing many attempt rows in one statement.

Only ``actions.transitions`` calls it. The SQL interpolates only the model's table name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import connection

from actions.models import ActionAttempt


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
