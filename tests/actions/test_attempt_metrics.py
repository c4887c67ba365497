"""minoots_action_attempts_total counts each attempt under the API's outcome words."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from actions.models import AttemptOutcome
from tests.actions.conftest import FireTimer
from tests.actions.support import Receiver, Reply, drive, webhook
from timers import metrics

pytestmark = pytest.mark.django_db


def _count(outcome: str) -> float:
    return REGISTRY.get_sample_value("minoots_action_attempts_total", {"kind": "webhook", "outcome": outcome}) or 0.0


def test_the_metric_knows_exactly_the_api_outcome_words() -> None:
    assert metrics.ATTEMPT_OUTCOMES == tuple(AttemptOutcome.values)


def test_attempts_are_counted_as_succeeded_transient_failure_and_permanent_failure(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer, django_capture_on_commit_callbacks: Any
) -> None:
    receiver.script("/flaky", Reply(503))  # then 200
    receiver.script("/gone", Reply(404))  # permanent
    receiver.script("/down", Reply(503), Reply(503))  # transient, then no attempt left
    before = {o: _count(o) for o in AttemptOutcome.values}

    with django_capture_on_commit_callbacks(execute=True):
        drive(fire_timer(webhook("a", f"{receiver.url}/flaky")))
        drive(fire_timer(webhook("b", f"{receiver.url}/gone")))
        drive(fire_timer(webhook("c", f"{receiver.url}/down"), retry={"maxAttempts": 2}))

    counted = {o: _count(o) - before[o] for o in AttemptOutcome.values}
    assert counted == {"succeeded": 1, "transient_failure": 3, "permanent_failure": 1}
    for old in ("success", "retry", "failed"):
        assert REGISTRY.get_sample_value("minoots_action_attempts_total", {"kind": "webhook", "outcome": old}) is None


def test_an_unknown_outcome_word_is_not_a_label(caplog: pytest.LogCaptureFixture) -> None:
    metrics.action_attempt("webhook", "success", 0.1)
    assert REGISTRY.get_sample_value("minoots_action_attempts_total", {"kind": "webhook", "outcome": "success"}) is None
    assert "unknown action attempt outcome 'success'" in caplog.text
