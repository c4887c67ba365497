"""Celery app: configured from Django settings (``CELERY_`` namespace), tasks from the apps."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "minoots_project.settings")

app = Celery("minoots_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["timers", "actions"])
