"""Execute one action run: claim it, run one attempt, record it, then retry, escalate or settle.

``run_execute`` is what the ``actions.run_action`` task calls; tests call it directly.

Contract of a timer's runs (see DESIGN.md "Scheduling" step 4 and "Actions"):

- *Claim*: one conditional UPDATE moves a run to ``running`` when it is ``pending`` and due
  (``next_attempt_at <= now()``, the database clock) or when it is ``running`` past its lease
  (its worker died). A run is therefore never executed twice at once, and a duplicate or early
  message is a quiet no-op. The attempt row is written in the claim's transaction, so an
  attempt whose worker died is visible, and is closed as a transient failure by the next claim.
- *Concurrency*: at most ``concurrency`` top-level runs of a timer are in progress (running,
  or pending with a ``next_attempt_at``, i.e. waiting for a retry). The others wait with
  ``next_attempt_at`` NULL and are started in ``position`` order as slots free up. Escalation
  runs are outside this limit: they exist because something already went wrong.
- *Retries*: a transient failure schedules ``next_attempt_at`` = now + backoffInitialMs ×
  backoffMultiplier^(n-1) (n = the failed attempt's number), jittered by ±20 %, raised to the
  server's ``Retry-After`` if that is longer, and capped by ``MINOOTS_MAX_BACKOFF`` whatever
  the hint. A retry due within ``MINOOTS_ARM_HORIZON`` is published with that ETA; a later
  one is published by the reconciler (``runs_recover``) once due.
- *Escalation*: when a run has had ``afterAttempts`` failed attempts, or has failed for good
  before reaching that many, its ``escalatesTo`` action gets a run of its own, once.
- *Settling*: when no run of the timer is pending or running, the timer is finished:
  ``settled`` if every run succeeded, otherwise ``failed`` naming every failed run's action id.
  An action whose escalation succeeded still counts as failed: the escalation reports the
  failure (pages someone, opens a ticket), it does not undo it. A failed escalation is named
  too, after the top-level actions.

Outcomes are serialised per timer by a row lock on the timer, so two runs finishing at once
cannot both believe the other is still running (and leave the timer ``fired`` forever).
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, F, Q, Value
from django.db.models.functions import Now
from django.utils import timezone

from actions.bundle import ActionBundle, ActionSpec, BundleError, RetryPolicy, iter_specs, parse_bundle
from actions.models import ActionAttempt, ActionRun, AttemptOutcome, RunStatus
from actions.runners import ActionContext, ActionError, ParameterError, get_runner
from actions.services import runs_forget_published, runs_publish
from timers import metrics
from timers.models import Timer
from timers.services import timer_append_event, timer_finish

log = logging.getLogger(__name__)

OUTPUT_EXCERPT_CAP = 4 * 1024
ERROR_CAP = 2000
JITTER = 0.2
_METRIC_OUTCOMES: dict[str, str] = {RunStatus.SUCCEEDED: "success", RunStatus.PENDING: "retry", RunStatus.FAILED: "failed"}


@dataclass(frozen=True)
class Outcome:
    """What one attempt did, whatever the kind."""

    succeeded: bool
    permanent: bool = False
    error: str = ""
    summary: str = ""
    retry_after: float | None = None
    http_status: int | None = None
    exit_code: int | None = None
    output: str = ""


@dataclass(frozen=True)
class Claim:
    run: ActionRun
    number: int
    attempt_id: int | None
    bundle: ActionBundle
    spec: ActionSpec | None


def excerpt(text: str, cap: int = OUTPUT_EXCERPT_CAP) -> str:
    """At most ``cap`` bytes of UTF-8, cut on a character boundary."""
    raw = text.encode()
    if len(raw) <= cap:
        return text
    return raw[: cap - 12].decode(errors="ignore") + "\n[truncated]"


def retry_delay(policy: RetryPolicy, *, failed_attempt: int, retry_after: float | None = None) -> timedelta:
    """Delay before the attempt after ``failed_attempt`` (1-based), as documented above."""
    cap_ms = settings.MINOOTS_MAX_BACKOFF.total_seconds() * 1000
    try:
        base_ms = policy.backoff_initial_ms * policy.backoff_multiplier ** (failed_attempt - 1)
    except OverflowError:
        base_ms = cap_ms
    delay_ms = min(base_ms, cap_ms) * random.uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay_ms = max(delay_ms, retry_after * 1000)
    return timedelta(milliseconds=max(0.0, min(delay_ms, cap_ms)))


def spec_for(bundle: ActionBundle, action_id: str) -> ActionSpec | None:
    return next((spec for _, spec in iter_specs(bundle) if spec.id == action_id), None)


# --- claim ---------------------------------------------------------------------------------


def _claim(run_id: UUID) -> Claim | None:
    lease_end = ExpressionWrapper(
        Now() + Value(settings.MINOOTS_ACTION_LEASE, output_field=DurationField()), output_field=DateTimeField()
    )
    due = Q(status=RunStatus.PENDING, next_attempt_at__lte=Now()) | Q(
        status=RunStatus.RUNNING, lease_expires_at__lt=Now()
    )
    with transaction.atomic():
        claimed = ActionRun.objects.filter(Q(pk=run_id) & due).update(
            status=RunStatus.RUNNING, attempts=F("attempts") + 1, lease_expires_at=lease_end, next_attempt_at=None
        )
        if not claimed:
            return None
        run = ActionRun.objects.select_related("timer").get(pk=run_id)
        now = timezone.now()
        try:
            bundle = parse_bundle(run.timer.action_bundle)
        except BundleError:
            bundle = ActionBundle(actions=())
        number = run.attempts
        lost = list(ActionAttempt.objects.filter(run=run, finished_at__isnull=True).values_list("number", flat=True))
        if lost:
            ActionAttempt.objects.filter(run=run, finished_at__isnull=True).update(
                finished_at=now, outcome=AttemptOutcome.TRANSIENT,
                error="worker lost: the lease expired before the attempt finished",
            )
            if max(lost) >= bundle.retry_policy.max_attempts:
                # The lost attempt was the last one allowed: conclude without a new attempt.
                ActionRun.objects.filter(pk=run.pk).update(attempts=max(lost))
                run.attempts = max(lost)
                return Claim(run=run, number=max(lost), attempt_id=None, bundle=bundle, spec=spec_for(bundle, run.action_id))
        attempt = ActionAttempt.objects.create(run=run, number=number, started_at=now)
    return Claim(run=run, number=number, attempt_id=attempt.pk, bundle=bundle, spec=spec_for(bundle, run.action_id))


def _republish_if_early(run_id: UUID) -> None:
    """A message that arrived before ``next_attempt_at`` (clock skew between worker and
    database, or a duplicate) is re-published for the remaining time on the database clock."""
    row = (
        ActionRun.objects.filter(pk=run_id, status=RunStatus.PENDING, next_attempt_at__isnull=False)
        .annotate(db_now=Now())
        .values_list("next_attempt_at", "db_now")
        .first()
    )
    if row is None:
        return
    next_attempt_at, db_now = row
    assert next_attempt_at is not None  # filtered on next_attempt_at__isnull=False
    remaining = next_attempt_at - db_now
    if timedelta(0) < remaining <= settings.MINOOTS_ARM_HORIZON:
        runs_publish([run_id], eta=timezone.now() + remaining)


# --- attempt -------------------------------------------------------------------------------


def timers_json(timers: list[Timer]) -> list[dict[str, Any]]:
    """The timers as the API shows them, for the default webhook body, rendered in one pass.

    ``actionBundle`` is left out: its parameters may carry another action's credentials
    (an Authorization header, a command's env) that a third-party receiver must not see.
    """
    from rest_framework.renderers import JSONRenderer

    from timers.api.serializers import TimerOutput

    rendered = json.loads(JSONRenderer().render(TimerOutput(timers, many=True).data))
    for timer in rendered:
        timer.pop("actionBundle", None)
    return rendered


def attempt_run(claim: Claim, *, timer_json: dict[str, Any] | None = None) -> Outcome:
    run = claim.run
    context = ActionContext(
        run_id=str(run.pk), timer_id=str(run.timer_id), tenant_id=run.timer.tenant_id,
        timer=timer_json if timer_json is not None else timers_json([run.timer])[0],
    )
    try:
        runner = get_runner(run.kind)
        result = runner.run(dict(run.parameters), context)
    except ParameterError as exc:
        return Outcome(succeeded=False, permanent=True, error=str(exc))
    except ActionError as exc:
        return Outcome(
            succeeded=False, permanent=exc.permanent, error=str(exc), retry_after=exc.retry_after,
            http_status=exc.http_status, exit_code=exc.exit_code, output=exc.output,
        )
    except Exception as exc:
        from celery.exceptions import SoftTimeLimitExceeded

        if isinstance(exc, SoftTimeLimitExceeded):
            return Outcome(succeeded=False, error="the worker's time limit interrupted the attempt")
        # A bug or an unforeseen condition: retrying blindly would repeat it.
        log.exception("action runner crashed", extra={"run_id": str(run.pk), "kind": run.kind})
        return Outcome(succeeded=False, permanent=True, error=f"internal error: {type(exc).__name__}: {exc}")
    return Outcome(
        succeeded=True, summary=result.summary, http_status=result.http_status, exit_code=result.exit_code,
        output=result.output,
    )


# --- conclude ------------------------------------------------------------------------------


def event_data(claim: Claim, outcome: Outcome, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"runId": str(claim.run.pk), "actionId": claim.run.action_id, "attempt": claim.number}
    if outcome.http_status is not None:
        data["httpStatus"] = outcome.http_status
    if outcome.exit_code is not None:
        data["exitCode"] = outcome.exit_code
    if outcome.error:
        data["error"] = outcome.error[:500]
    return {**data, **extra}


def conclude(claim: Claim, outcome: Outcome, started: float) -> str:
    """Record the attempt and move the run on. Return the run's new status (or 'stale')."""
    run = claim.run
    timer_id = run.timer_id
    now = timezone.now()
    to_publish: list[UUID] = []
    retry_at: datetime | None = None
    with transaction.atomic():
        # Serialises outcomes per timer (see module docstring). NO KEY: event and run inserts
        # referencing the timer are not blocked.
        list(Timer.objects.select_for_update(no_key=True).filter(pk=timer_id).values_list("pk", flat=True))
        if claim.attempt_id is not None:
            ActionAttempt.objects.filter(pk=claim.attempt_id, finished_at__isnull=True).update(
                finished_at=now,
                outcome=(
                    AttemptOutcome.SUCCEEDED if outcome.succeeded
                    else AttemptOutcome.PERMANENT if outcome.permanent else AttemptOutcome.TRANSIENT
                ),
                http_status=outcome.http_status,
                exit_code=outcome.exit_code,
                duration_ms=max(0, int((time.monotonic() - started) * 1000)),
                error=outcome.error[:ERROR_CAP],
                output_excerpt=excerpt(outcome.output),
            )
        mine = ActionRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING, attempts=claim.number)
        policy = claim.bundle.retry_policy
        if outcome.succeeded:
            status = RunStatus.SUCCEEDED
            moved = mine.update(
                status=status, finished_at=now, lease_expires_at=None, last_error="", result_summary=outcome.summary[:500]
            )
        elif not outcome.permanent and claim.number < policy.max_attempts:
            status = RunStatus.PENDING
            retry_at = now + retry_delay(policy, failed_attempt=claim.number, retry_after=outcome.retry_after)
            moved = mine.update(
                status=status, next_attempt_at=retry_at, lease_expires_at=None, last_error=outcome.error[:ERROR_CAP]
            )
        else:
            status = RunStatus.FAILED
            moved = mine.update(
                status=status, finished_at=now, lease_expires_at=None, last_error=outcome.error[:ERROR_CAP]
            )
        if not moved:
            # Our lease expired and another worker took the run over: its outcome counts.
            log.warning("stale action outcome ignored", extra={"run_id": str(run.pk), "attempt": claim.number})
            return "stale"

        if status == RunStatus.SUCCEEDED:
            timer_append_event(timer_id=timer_id, kind="action.succeeded", **event_data(claim, outcome, summary=outcome.summary[:200]))
        elif status == RunStatus.PENDING:
            assert retry_at is not None
            timer_append_event(
                timer_id=timer_id, kind="action.retrying", **event_data(claim, outcome, nextAttemptAt=retry_at.isoformat())
            )
        else:
            timer_append_event(timer_id=timer_id, kind="action.failed", **event_data(claim, outcome))

        if status != RunStatus.SUCCEEDED:
            to_publish += _escalate(claim, failed_for_good=status == RunStatus.FAILED, now=now)
        if status != RunStatus.PENDING:
            to_publish += start_waiting(timer_id=timer_id, concurrency=claim.bundle.concurrency, now=now)
            finish_timer_if_done(timer_id)

        if to_publish:
            transaction.on_commit(lambda: runs_publish(to_publish))
        if retry_at is not None and retry_at <= now + settings.MINOOTS_ARM_HORIZON:
            run_ids = [run.pk]
            eta = retry_at
            transaction.on_commit(lambda: runs_publish(run_ids, eta=eta))
    metrics.action_attempt(run.kind, _METRIC_OUTCOMES[str(status)], time.monotonic() - started)
    return str(status)


def _escalate(claim: Claim, *, failed_for_good: bool, now: datetime) -> list[UUID]:
    spec = claim.spec
    if spec is None or spec.escalation is None:
        return []
    escalation = spec.escalation
    if claim.number < escalation.after_attempts and not failed_for_good:
        return []
    run = claim.run
    if ActionRun.objects.filter(timer_id=run.timer_id, action_id=escalation.escalates_to.id).exists():
        return []
    target = escalation.escalates_to
    escalated = ActionRun.objects.create(
        timer_id=run.timer_id, action_id=target.id, kind=target.kind, parameters=target.parameters,
        position=run.position, escalation_level=run.escalation_level + 1, escalated_from=run, next_attempt_at=now,
    )
    timer_append_event(
        timer_id=run.timer_id, kind="action.escalated", runId=str(run.pk), actionId=run.action_id,
        escalatesTo=target.id, escalationRunId=str(escalated.pk), failedAttempts=claim.number,
    )
    return [escalated.pk]


def start_waiting(*, timer_id: UUID, concurrency: int, now: datetime) -> list[UUID]:
    """Give free concurrency slots to waiting top-level runs, in position order."""
    top = ActionRun.objects.filter(timer_id=timer_id, escalation_level=0)
    active = top.filter(
        Q(status=RunStatus.RUNNING) | Q(status=RunStatus.PENDING, next_attempt_at__isnull=False)
    ).count()
    slots = concurrency - active
    if slots <= 0:
        return []
    waiting = list(
        top.filter(status=RunStatus.PENDING, next_attempt_at__isnull=True)
        .order_by("position")
        .values_list("pk", flat=True)[:slots]
    )
    if waiting:
        ActionRun.objects.filter(pk__in=waiting, next_attempt_at__isnull=True).update(next_attempt_at=now)
    return waiting


def finish_timer_if_done(timer_id: UUID) -> bool:
    runs = ActionRun.objects.filter(timer_id=timer_id)
    if runs.filter(status__in=[RunStatus.PENDING, RunStatus.RUNNING]).exists():
        return False
    failed = list(
        runs.filter(status=RunStatus.FAILED).order_by("escalation_level", "position").values_list("action_id", flat=True)
    )
    return timer_finish(timer_id=timer_id, failed_actions=failed)


# --- entry point ---------------------------------------------------------------------------


def run_execute(*, run_id: str | UUID) -> bool:
    """Claim and execute one attempt of ``run_id``; False when there was nothing to do
    (unknown id, already claimed, finished, or not yet due)."""
    try:
        run_uuid = run_id if isinstance(run_id, UUID) else UUID(str(run_id))
    except ValueError:
        log.warning("run_action with an invalid run id", extra={"run_id": str(run_id)})
        return False
    claim = _claim(run_uuid)
    if claim is None:
        _republish_if_early(run_uuid)
        return False
    runs_forget_published([run_uuid])
    started = time.monotonic()
    if claim.attempt_id is None:
        outcome = Outcome(succeeded=False, error="worker lost: the lease expired before the attempt finished")
    else:
        outcome = attempt_run(claim)
    status = conclude(claim, outcome, started)
    log.info(
        "action attempt %s", status,
        extra={"run_id": str(run_uuid), "timer_id": str(claim.run.timer_id), "attempt": claim.number, "event": "action"},
    )
    return True
