"""Execute a batch of first attempts with a few queries per batch instead of ~20 per run.

When 10,000 timers fire in the same second, their runs are published in chunks of
MINOOTS_ACTION_BATCH; each chunk is one ``actions.run_actions`` message. A batch claims its
runs with the same claim as single runs (``transitions.runs_claim``: duplicates stay
harmless; runs it holds back for their tenant's action concurrency cap are re-published for a
moment later, together, while other tenants' runs of the batch proceed), and concludes through
the same ``execution.runs_conclude``.

*Together*: the attempts of kinds that can have many in flight (``Runner.concurrent``: the
webhook's, on the worker process's event loop) start at once, each bounded by its own
deadline; the batch waits for them and records what ended at least every FLUSH_SECONDS, so a
slow receiver never leaves the others unrecorded for long (a crash then would repeat them after
their lease). A batch of 20 webhooks takes about as long as its slowest attempt, not the sum.
The tenant's allow-list is read once per tenant and kind for the batch, not per attempt.

*One by one*: the other kinds' attempts (commands, files, Slack) run after them in the
batch's thread, failures recorded at once (so retries are scheduled on time), successes
together at least every FLUSH_SECONDS. Before each of them the batch takes the slot for it
(``transitions.run_start``) and, should its tenant now hold more slots than its cap while
another tenant waits, gives that run and the rest back instead (``transitions.runs_release``,
re-published together about a second later): a tenant that filled every worker while alone
frees slots within one attempt once another tenant's run is due, instead of after its whole
backlog. Either way a batch holds one worker slot: its thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future, wait
from typing import Any
from uuid import UUID

from django.conf import settings

from actions import execution, transitions
from actions.errors import ParameterError
from actions.runners import ActionResult, get_runner
from actions.runners.webhook import longest_attempt_seconds
from actions.runners.webhook_transport import TRANSPORT
from actions.services import runs_forget_published
from actions.transitions import Claim, Finished, Outcome

log = logging.getLogger(__name__)

FLUSH_SECONDS = 2.0


def runs_execute_batch(*, run_ids: Sequence[str | UUID]) -> int:
    """Claim and run one attempt of each claimable run in ``run_ids``; return how many ran."""
    ids = []
    for raw in run_ids:
        try:
            ids.append(raw if isinstance(raw, UUID) else UUID(str(raw)))
        except ValueError:
            log.warning("run_actions with an invalid run id", extra={"run_id": str(raw)})
    claims = transitions.runs_claim(run_ids=ids)
    claimed = {c.run.pk for c in claims}
    # Runs held back by their tenant's action concurrency cap (or early) come back later.
    execution.runs_republish_early([run_id for run_id in ids if run_id not in claimed])
    if not claims:
        return 0
    with execution.leases_ended_on_database_outage([c.run.pk for c in claims]):
        return _run_claimed(claims)


def _run_claimed(claims: Sequence[Claim]) -> int:
    runs_forget_published([c.run.pk for c in claims])
    rendered = execution.timers_json([c.run.timer for c in claims])
    together: list[tuple[Claim, dict[str, Any]]] = []
    one_by_one: list[tuple[Claim, dict[str, Any]]] = []
    for claim, timer_json in zip(claims, rendered, strict=True):
        (together if _concurrent(claim) else one_by_one).append((claim, timer_json))
    ran = _run_together(together) if together else 0
    return ran + _run_one_by_one(one_by_one, slot_taken=bool(together))


def _concurrent(claim: Claim) -> bool:
    if claim.attempt_id is None:
        return False  # a lost last attempt: nothing to run, concluded one by one
    try:
        concurrent = get_runner(claim.run.kind).concurrent
    except ParameterError:
        return False  # an unknown kind: its attempt fails one by one, saying so
    return concurrent and settings.MINOOTS_WEBHOOKS_TOGETHER


def _run_together(pairs: Sequence[tuple[Claim, dict[str, Any]]]) -> int:
    """Start every attempt of ``pairs`` at once, then record them as they end (see above)."""
    refusals: dict[tuple[str, str], str | None] = {}
    started_at = time.monotonic()
    ended: dict[Future[ActionResult], float] = {}
    pending: dict[Future[ActionResult], Claim] = {}
    started = [_begin(claim, timer_json, refusals) for claim, timer_json in pairs]
    coroutines = [c for c in started if not isinstance(c, Future)]
    in_flight = iter(TRANSPORT.submit_many(coroutines))
    for (claim, _), begun in zip(pairs, started, strict=True):
        future = begun if isinstance(begun, Future) else next(in_flight)
        future.add_done_callback(lambda f: ended.setdefault(f, time.monotonic()))
        pending[future] = claim
    # Each attempt ends itself (a slot wait, then its deadline); this only guards against a
    # stopped event loop.
    give_up_at = time.monotonic() + longest_attempt_seconds()
    last_flush = time.monotonic()
    finished: list[Finished] = []
    while pending:
        # Wake for the next flush only with something to flush; otherwise when all have ended.
        flush_at = last_flush + FLUSH_SECONDS if finished else give_up_at
        done, _ = wait(list(pending), timeout=max(0.0, min(flush_at, give_up_at) - time.monotonic()))
        for future in done:
            claim = pending.pop(future)
            outcome = execution.outcome_of(future.result, claim=claim)
            finished.append(
                Finished(claim=claim, outcome=outcome, seconds=ended.get(future, time.monotonic()) - started_at)
            )
            if len(finished) == 1 and pending:
                last_flush = time.monotonic()  # the flush window opens with the first to record
        if pending and time.monotonic() >= give_up_at:
            for future, claim in pending.items():
                if future.cancel():  # stops its coroutine too: it cannot send later
                    outcome = Outcome(succeeded=False, error="the attempt did not end by its deadline")
                else:  # it ended just now: its own outcome counts
                    outcome = execution.outcome_of(future.result, claim=claim)
                finished.append(Finished(claim=claim, outcome=outcome, seconds=time.monotonic() - started_at))
            pending.clear()
        if finished and (not pending or time.monotonic() - last_flush >= FLUSH_SECONDS):
            execution.runs_conclude(finished)
            finished, last_flush = [], time.monotonic()
    return len(pairs)


def _begin(
    claim: Claim, timer_json: dict[str, Any], refusals: dict[tuple[str, str], str | None]
) -> Coroutine[Any, Any, ActionResult] | Future[ActionResult]:
    """The attempt's coroutine, ready for the loop; a future already failed when it could not
    start (parameters that no longer parse, a kind taken off the allow-list, a tenant gone)."""
    runner = get_runner(claim.run.kind)
    context = execution.attempt_context(claim, timer_json=timer_json)
    try:
        params = runner.checked(dict(claim.run.parameters), context, refusals=refusals)
        return runner.attempt_async(params, context)
    except Exception as exc:
        failed: Future[ActionResult] = Future()
        failed.set_exception(exc)
        return failed


def _run_one_by_one(pairs: Sequence[tuple[Claim, dict[str, Any]]], *, slot_taken: bool) -> int:
    """Run the attempts of ``pairs`` in turn (see above); ``slot_taken``: attempts of this batch
    ran before, so the first of these starts like a later one."""
    successes: list[Finished] = []
    last_flush = time.monotonic()
    ran = 0
    unmarked: list[Claim] = []  # successes not recorded yet that still count as the slot
    claims = [claim for claim, _ in pairs]
    for index, (claim, timer_json) in enumerate(pairs):
        if index or slot_taken:
            tenant_id = claim.run.timer.tenant_id
            tenants = {tenant_id, *(c.run.timer.tenant_id for c in unmarked)}
            counted = any(transitions.tenant_contended(t) for t in tenants)
            started = transitions.run_start(claim, done=unmarked if counted else ())
            if counted:
                unmarked = []
            if not started:
                continue  # the lease expired while earlier attempts ran; another worker owns it now
            if counted and transitions.tenant_over_cap(tenant_id):
                _give_back(claims[index:])
                break
        started_at = time.monotonic()
        outcome = execution.attempt_run(claim, timer_json=timer_json)
        ran += 1
        done = Finished(claim=claim, outcome=outcome, seconds=time.monotonic() - started_at)
        if outcome.succeeded:
            successes.append(done)
            unmarked.append(claim)
        else:
            execution.runs_conclude([done])
        if successes and time.monotonic() - last_flush > FLUSH_SECONDS:
            execution.runs_conclude(successes)
            successes, last_flush, unmarked = [], time.monotonic(), []
    execution.runs_conclude(successes)
    return ran


def _give_back(claims: Sequence[Claim]) -> None:
    """Release the runs of these claims (none started) and re-publish them together; a claim
    standing for a lost last attempt has nothing to run and is concluded at once."""
    lost = [c for c in claims if c.attempt_id is None]
    if lost:
        execution.runs_conclude([Finished(claim=c, outcome=execution.attempt_run(c), seconds=0.0) for c in lost])
    execution.runs_republish_early(transitions.runs_release([c for c in claims if c.attempt_id is not None]))
