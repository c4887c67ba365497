"""Index operations for large tables: CONCURRENTLY on Postgres (the migration must be
``atomic = False``), the plain form on SQLite. Not a migration: the loader skips modules whose
name starts with an underscore."""

from __future__ import annotations

from typing import Any

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations


def is_postgres(schema_editor: Any) -> bool:
    return bool(schema_editor.connection.vendor == "postgresql")


class _PlainOffPostgres:
    """The CONCURRENTLY operation on Postgres; ``plain`` (the ordinary one) on other databases."""

    plain: Any

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if is_postgres(schema_editor):
            super().database_forwards(app_label, schema_editor, from_state, to_state)  # type: ignore[misc]
        else:
            self.plain.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if is_postgres(schema_editor):
            super().database_backwards(app_label, schema_editor, from_state, to_state)  # type: ignore[misc]
        else:
            self.plain.database_backwards(self, app_label, schema_editor, from_state, to_state)


class AddIndexSafely(_PlainOffPostgres, AddIndexConcurrently):
    """CREATE INDEX CONCURRENTLY on Postgres, a plain CREATE INDEX elsewhere."""

    plain = migrations.AddIndex


class RemoveIndexSafely(_PlainOffPostgres, RemoveIndexConcurrently):
    """DROP INDEX CONCURRENTLY on Postgres, a plain DROP INDEX elsewhere."""

    plain = migrations.RemoveIndex


class DropForeignKeyIndex(migrations.SeparateDatabaseAndState):
    """``field`` (a ForeignKey of ``model_name``, now ``db_index=False``) loses the index Django
    made for it, and nothing else: Django's AlterField would also drop and re-create the
    foreign key, validating every row under a lock. DROP INDEX CONCURRENTLY on Postgres (the
    migration must be ``atomic = False``); backwards, the index again."""

    def __init__(self, *, model_name: str, name: str, field: Any, table: str, column: str) -> None:
        self.arguments = {"model_name": model_name, "name": name, "field": field, "table": table, "column": column}
        def index(schema_editor: Any) -> tuple[str, str]:
            quote = schema_editor.quote_name
            return quote(schema_editor._create_index_name(table, [column], suffix="")), (
                "CONCURRENTLY " if is_postgres(schema_editor) else ""
            )

        def drop(apps: Any, schema_editor: Any) -> None:
            quoted, concurrently = index(schema_editor)
            schema_editor.execute(f"DROP INDEX {concurrently}IF EXISTS {quoted}")

        def restore(apps: Any, schema_editor: Any) -> None:
            quoted, concurrently = index(schema_editor)
            quote = schema_editor.quote_name
            schema_editor.execute(f"CREATE INDEX {concurrently}IF NOT EXISTS {quoted} ON {quote(table)} ({quote(column)})")

        super().__init__(
            state_operations=[migrations.AlterField(model_name=model_name, name=name, field=field)],
            database_operations=[migrations.RunPython(drop, restore)],
        )

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        """Its own arguments (``squashmigrations`` writes the operation back from these), not
        the state and database operations it builds from them."""
        return self.__class__.__qualname__, [], dict(self.arguments)
