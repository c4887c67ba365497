"""ActionRun.timer and ActionAttempt.run lose their own indexes: actionrun_timer_position
(timer_id, position) and actionattempt_run_number_unique (run_id, number) serve their lookups
and cascades, and every run and attempt insert paid for both."""

from __future__ import annotations

import django.db.models.deletion
from django.db import migrations, models

from timers.migrations._operations import DropForeignKeyIndex


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("actions", "0006_actionrun_worker"),
        ("timers", "0008_timerevent_one_timer_index"),
    ]

    operations = [
        DropForeignKeyIndex(
            model_name="actionrun",
            name="timer",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="action_runs",
                to="timers.timer",
            ),
            table="actions_actionrun",
            column="timer_id",
        ),
        DropForeignKeyIndex(
            model_name="actionattempt",
            name="run",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="attempt_records",
                to="actions.actionrun",
            ),
            table="actions_actionattempt",
            column="run_id",
        ),
    ]
