"""Celery app: configured from Django settings (``CELERY_`` namespace), tasks from the apps.

The worker and beat refuse to start while a Django system check reports an error (the settings
invariants of ``minoots_project.checks``), as ``manage.py`` commands do. When the broker goes
away they retry every BROKER_RETRY_MAX seconds at most, forever (settings), instead of
Celery's 2, 4, 6… up to 30 s for 100 attempts.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from celery import Celery, signals
from celery.app.amqp import AMQP
from kombu import Connection

# Imported for its side effect: registers the settings invariants as Django system checks.
from minoots_project import checks  # noqa: F401

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "minoots_project.settings")

# Longest wait between two attempts to reach a broker that went away: a worker is back within
# this of Redis returning. One TCP connect per try costs Redis nothing.
BROKER_RETRY_MAX = 2.0


class BrokerConnection(Connection):
    """kombu's Connection, whose reconnect loop waits at most BROKER_RETRY_MAX between tries.

    The worker's consumer and beat call ``ensure_connection`` without intervals, so kombu's
    defaults apply (2 s, then 2 s more per try, up to 30 s): a worker could stay away half a
    minute after Redis is back, with timers due. Calls that pass their own intervals keep them.
    """

    # The stubs type the intervals as int; kombu takes seconds as floats.
    def ensure_connection(self, *args: Any, **kwargs: Any) -> Connection:  # type: ignore[override]
        if len(args) <= 2:  # (errback, max_retries): the intervals were not given positionally
            kwargs.setdefault("interval_start", 0.5)
            kwargs.setdefault("interval_step", 0.5)
            kwargs.setdefault("interval_max", BROKER_RETRY_MAX)
        return super().ensure_connection(*args, **kwargs)


class BrokerAMQP(AMQP):
    Connection = BrokerConnection
    BrokerConnection = BrokerConnection


app = Celery("minoots_project", amqp=BrokerAMQP)
app.config_from_object("django.conf:settings", namespace="CELERY")
# Celery's Django fixup closes every database connection before and after every task unless
# this is set (``DjangoWorkerFixup.close_database``, celery/fixups/django.py), whatever
# CONN_MAX_AGE says: each tick and each action attempt then opened a new Postgres connection
# first, 3-5 ms before its claim could start. With it the fixup closes them only every
# 2 x this many tasks; ``_reuse_connections`` below does what Django does around a request.
app.conf["CELERY_DB_REUSE_MAX"] = 1_000_000
app.autodiscover_tasks(["timers", "actions", "integrations.slack"])


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


@signals.task_prerun.connect(weak=False)
@signals.task_postrun.connect(weak=False)
def _reuse_connections(sender: Any = None, **_: Any) -> None:
    """Around every task what Django does around every request (``close_old_connections``):
    close a connection that failed or outlived CONN_MAX_AGE, and with CONN_HEALTH_CHECKS test
    the one kept at its next use. Not for eager tasks, which run inside their caller's own
    transaction."""
    request = getattr(sender, "request", None)
    if getattr(request, "is_eager", False):
        return
    # Imported here: this module is imported by the settings' package before apps are ready.
    from django.db import close_old_connections

    close_old_connections()


@signals.celeryd_init.connect(weak=False)
def _yield_unless_firing(options: dict[str, Any] | None = None, **_: Any) -> None:
    """An action worker (``-Q actions``) runs below the firing worker (minoots_project/priority.py);
    sent before the worker starts its pool threads, which inherit the priority."""
    from minoots_project.priority import consumes_firing_queue, yield_to_firing

    if not consumes_firing_queue((options or {}).get("queues")):
        yield_to_firing("action worker")
