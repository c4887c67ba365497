from __future__ import annotations

import uuid

from django.db import models


class BareTimer(models.Model):
    """One row per create; the bench makes the table (``bench.timers.BARE_TABLE_SQL``)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=200)
    fire_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        managed = False
        db_table = "bare_timer"

    def __str__(self) -> str:
        return self.name
