"""Celery app: configured from Django settings (``CELERY_`` namespace), tasks from the apps.

The worker and beat refuse to start while a Django system check reports an error (the settings
invariants of ``minoots_project.checks``), as ``manage.py`` commands do.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from celery import Celery, signals

# Imported for its side effect: registers the settings invariants as Django system checks.
from minoots_project import checks  # noqa: F401

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "minoots_project.settings")

app = Celery("minoots_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["timers", "actions"])


def refuse_to_start_on_failed_checks(**_: Any) -> None:
    """Exit with status 1, printing the errors, when a system check fails.

    Celery's Django fixup runs the checks on this same signal but discards what they report
    (``DjangoWorkerFixup.validate_models`` in celery/fixups/django.py), so without this a
    misconfigured worker would start. Worker and beat both send ``import_modules`` before
    they connect to the broker. ``CELERY_SKIP_CHECKS`` (the fixup's own switch) skips it.
    """
    if os.environ.get("CELERY_SKIP_CHECKS"):
        return
    # Imported here: Django's app registry must not load while the settings module imports us.
    import django
    from django.apps import apps
    from django.core.checks import run_checks

    if not apps.ready:
        django.setup()
    errors = [message for message in run_checks() if message.is_serious() and not message.is_silenced()]
    if not errors:
        return
    sys.stderr.write(
        "SystemCheckError: System check identified some issues; not starting.\n\nERRORS:\n"
        + "".join(f"{error}\n" for error in errors)
    )
    sys.stderr.flush()
    # SystemExit rather than an exception: Celery's signal dispatch would log one with its
    # traceback before the loader re-raises it (celery/loaders/base.py import_default_modules).
    raise SystemExit(1)


signals.import_modules.connect(refuse_to_start_on_failed_checks, sender=app)
