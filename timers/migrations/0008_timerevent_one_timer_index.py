"""TimerEvent.timer loses its own index: ``timerevent_timer_id`` (timer_id, id) serves its
lookups and the cascade, and every event insert (creates, fires, attempts) paid for both.

Only the index is dropped (CONCURRENTLY on Postgres): Django's AlterField would also drop and
re-create the foreign key, validating every event row under a lock.
"""

from __future__ import annotations

from typing import Any

import django.db.models.deletion
from django.db import migrations, models

from timers.migrations._operations import is_postgres


def _index(schema_editor: Any) -> tuple[str, str, str]:
    """(index name, table, column) of the foreign key's own index, as Django named it."""
    table, column = "timers_timerevent", "timer_id"
    return schema_editor._create_index_name(table, [column], suffix=""), table, column


def drop(apps: Any, schema_editor: Any) -> None:
    name, _, _ = _index(schema_editor)
    quoted = schema_editor.quote_name(name)
    concurrently = "CONCURRENTLY " if is_postgres(schema_editor) else ""
    schema_editor.execute(f"DROP INDEX {concurrently}IF EXISTS {quoted}")


def restore(apps: Any, schema_editor: Any) -> None:
    name, table, column = _index(schema_editor)
    concurrently = "CONCURRENTLY " if is_postgres(schema_editor) else ""
    quote = schema_editor.quote_name
    schema_editor.execute(f"CREATE INDEX {concurrently}IF NOT EXISTS {quote(name)} ON {quote(table)} ({quote(column)})")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("timers", "0007_timer_list_filter_indexes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="timerevent",
                    name="timer",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="timers.timer",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(drop, restore)],
        ),
    ]
