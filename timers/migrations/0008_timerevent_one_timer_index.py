"""TimerEvent.timer loses its own index: ``timerevent_timer_id`` (timer_id, id) serves its
lookups and the cascade, and every event insert (creates, fires, attempts) paid for both."""

from __future__ import annotations

import django.db.models.deletion
from django.db import migrations, models

from timers.migrations._operations import DropForeignKeyIndex


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("timers", "0007_timer_list_filter_indexes"),
    ]

    operations = [
        DropForeignKeyIndex(
            model_name="timerevent",
            name="timer",
            field=models.ForeignKey(
                db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="events", to="timers.timer"
            ),
            table="timers_timerevent",
            column="timer_id",
        ),
    ]
