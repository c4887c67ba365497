"""GET /api/timers?label=… and ?fireAfter=/fireBefore= without walking every timer of the
tenant in the list's order (7.0 s and 565 ms on ten million), built CONCURRENTLY on Postgres.

- ``timer_labels``: GIN (``jsonb_path_ops``) on labels, for ``labels @> {key: value}``; on
  SQLite nothing (``PostgresGinIndex``), where the list compares the label's text instead.
- ``timer_tenant_fire_at`` (tenant, fire_at, created_at, id): one tenant's timers in a fireAt
  window, of any status (``timer_tenant_pending_fire_at`` holds only the pending ones), their
  ids and the newest one's created_at read from the index alone.
"""

from __future__ import annotations

from django.db import migrations, models

import timers.models
from timers.migrations._operations import AddIndexSafely


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("timers", "0006_timer_tenant_name"),
    ]

    operations = [
        AddIndexSafely(
            model_name="timer",
            index=timers.models.PostgresGinIndex(fields=["labels"], name="timer_labels", opclasses=["jsonb_path_ops"]),
        ),
        AddIndexSafely(
            model_name="timer",
            index=models.Index(fields=["tenant", "fire_at", "created_at", "id"], name="timer_tenant_fire_at"),
        ),
    ]
