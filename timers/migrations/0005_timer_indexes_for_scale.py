"""Indexes for ten million timers (issue 14 item 5), built without locking the table.

On Postgres every index is created and dropped CONCURRENTLY (hence ``atomic = False``):
writes go on while a large table is indexed. SQLite, the embedded mode, gets the same
indexes the plain way. New ones are built before the ones they replace are dropped.

- ``timer_tenant_status_created`` / ``timer_status_created`` (status, created_at, id): a
  list filtered by status in the list's own order, to the last key; they replace
  ``timer_tenant_status`` (without the id, so Postgres sorted every timer of the status for
  one page) and ``timer_status_fire_at`` (the pending partial index serves its queries).
- ``timer_tenant_pending_fire_at``: one tenant's overdue and due-soon timers.
- the tenant foreign key's own index and, on Postgres, its ``varchar_pattern_ops`` twin are
  dropped: ``timer_tenant_created`` starts with the same column, and every index costs every
  insert.
"""

from __future__ import annotations

from typing import Any

import django.db.models.deletion
from django.db import migrations, models

from timers.migrations._operations import AddIndexSafely, RemoveIndexSafely, is_postgres


def drop_tenant_fk_indexes(apps: Any, schema_editor: Any) -> None:
    timer = apps.get_model("timers", "Timer")
    with schema_editor.connection.cursor():
        names = schema_editor._constraint_names(timer, ["tenant_id"], index=True)
    how = "CONCURRENTLY IF EXISTS" if is_postgres(schema_editor) else "IF EXISTS"
    for name in names:
        schema_editor.execute(f"DROP INDEX {how} {schema_editor.quote_name(name)}")


def create_tenant_fk_indexes(apps: Any, schema_editor: Any) -> None:
    timer = apps.get_model("timers", "Timer")
    field = timer._meta.get_field("tenant")
    schema_editor.execute(schema_editor._create_index_sql(timer, fields=[field]))
    if is_postgres(schema_editor):
        like = schema_editor._create_like_index_sql(timer, field)
        if like is not None:
            schema_editor.execute(like)


TENANT_FK = models.ForeignKey(
    db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="timers", to="timers.tenant"
)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("timers", "0004_timer_created"),
    ]

    operations = [
        AddIndexSafely(
            model_name="timer",
            index=models.Index(fields=["tenant", "status", "-created_at", "-id"], name="timer_tenant_status_created"),
        ),
        AddIndexSafely(
            model_name="timer",
            index=models.Index(fields=["status", "-created_at", "-id"], name="timer_status_created"),
        ),
        AddIndexSafely(
            model_name="timer",
            index=models.Index(
                condition=models.Q(("status__in", ["scheduled", "armed"])),
                fields=["tenant", "fire_at"],
                name="timer_tenant_pending_fire_at",
            ),
        ),
        RemoveIndexSafely(model_name="timer", name="timer_tenant_status"),
        RemoveIndexSafely(model_name="timer", name="timer_status_fire_at"),
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AlterField(model_name="timer", name="tenant", field=TENANT_FK)],
            database_operations=[migrations.RunPython(drop_tenant_fk_indexes, create_tenant_fk_indexes)],
        ),
    ]
