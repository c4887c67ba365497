"""`make run` at INFO is quiet while nothing happens: a reconciler pass that changed nothing, and
Celery's lines about sending, receiving and finishing that pass, are DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from minoots_project.logconfig import QuietReconcileFilter
from tests.factories import schedule_timer
from timers import engine
from timers.models import Tenant


def _record(logger: str, msg: str, args: object, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord(logger, level, __file__, 1, msg, args, None)  # type: ignore[arg-type]


CHATTER = [
    ("celery.beat", "Scheduler: Sending due task %s (%s)", ("reconcile", "timers.reconcile")),
    ("celery.worker.strategy", "Task %s[%s] received", ("timers.reconcile", "2f35a1a5")),
    (
        "celery.app.trace",
        "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s",
        ({"name": "timers.reconcile", "id": "2f35a1a5", "runtime": 0.004, "return_value": {"armed": 0}},),
    ),
]


@pytest.fixture
def root_level() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    level = root.level
    yield root
    root.setLevel(level)


@pytest.mark.parametrize(("logger", "msg", "args"), CHATTER)
def test_celerys_lines_about_each_reconciler_pass_are_debug(
    root_level: logging.Logger, logger: str, msg: str, args: object
) -> None:
    root_level.setLevel(logging.INFO)
    record = _record(logger, msg, args)
    assert QuietReconcileFilter().filter(record) is False
    root_level.setLevel(logging.DEBUG)
    record = _record(logger, msg, args)
    assert QuietReconcileFilter().filter(record) is True
    assert record.levelname == "DEBUG"


def test_celerys_lines_about_other_tasks_and_warnings_stay(root_level: logging.Logger) -> None:
    root_level.setLevel(logging.INFO)
    other = _record("celery.worker.strategy", "Task %s[%s] received", ("timers.fire_due", "1"))
    warning = _record("celery.beat", "Scheduler: %s (%s)", ("timers.reconcile", "x"), level=logging.WARNING)
    ours = _record("timers.engine", "reconcile %s", ({"armed": 1},))
    for record in (other, warning, ours):
        assert QuietReconcileFilter().filter(record) is True
        assert record.levelname in ("INFO", "WARNING")


@pytest.mark.django_db
def test_a_pass_that_changed_nothing_logs_at_debug_and_one_that_armed_at_info(
    tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="timers.engine")
    engine.reconcile()
    quiet = [r for r in caplog.records if r.name == "timers.engine" and r.getMessage().startswith("reconcile ")]
    assert [r.levelno for r in quiet] == [logging.DEBUG]

    caplog.clear()
    schedule_timer(tenant=tenant, in_=timedelta(minutes=5))
    engine.reconcile(now=timezone.now() + timedelta(minutes=4, seconds=30))  # within the arm horizon
    busy = [r for r in caplog.records if r.name == "timers.engine" and r.getMessage().startswith("reconcile ")]
    assert [r.levelno for r in busy] == [logging.INFO]
    assert "'armed': 1" in busy[0].getMessage()
