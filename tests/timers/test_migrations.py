"""The project's own migration operations, as Django's migration writer (squashmigrations)
handles them."""

from __future__ import annotations

from importlib import import_module

from django.db.migrations.writer import OperationWriter

from timers.migrations._operations import DropForeignKeyIndex


def test_drop_foreign_key_index_is_written_back_with_the_arguments_it_was_given() -> None:
    migration = import_module("actions.migrations.0007_foreign_keys_without_their_own_index").Migration
    for operation in migration.operations:
        text, _ = OperationWriter(operation, indentation=0).serialize()
        assert text.startswith("timers.migrations._operations.DropForeignKeyIndex(\n"), text
        _, args, kwargs = operation.deconstruct()
        rebuilt = DropForeignKeyIndex(*args, **kwargs)
        assert rebuilt.deconstruct() == operation.deconstruct()
        assert [type(op).__name__ for op in rebuilt.state_operations] == ["AlterField"]
        assert kwargs["table"] in text and kwargs["column"] in text
