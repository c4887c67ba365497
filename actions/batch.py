"""Execute a batch of first attempts with a few queries per batch instead of ~20 per run.

When 10,000 timers fire in the same second, their runs are published in chunks of
MINOOTS_ACTION_BATCH; each chunk is one ``actions.run_actions`` message. A batch claims its
runs with the same claim as single runs (``transitions.runs_claim``: duplicates stay
harmless; runs it holds back for their tenant's action concurrency cap are re-published for a
moment later, together, while other tenants' runs of the batch proceed), runs each attempt
(the I/O) one after the other — the worker's threads and processes give the parallelism, and
a batch holds one worker slot — and concludes through the same ``execution.runs_conclude``:
failures at once (so retries are scheduled on time), successes together, but at least every
FLUSH_SECONDS, so a slow attempt never leaves earlier successes unrecorded for long (a crash
then would repeat them after their lease).

Before each later run the batch takes the slot for it (``transitions.run_start``) and, should
its tenant now hold more slots than its cap while another tenant waits, gives that run and
the rest back instead (``transitions.runs_release``, re-published together about a second
later): a tenant that filled every worker while alone frees slots within one attempt once
another tenant's run is due, instead of after its whole backlog.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from uuid import UUID

from actions import execution, transitions
from actions.services import runs_forget_published
from actions.transitions import Claim, Finished

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
    successes: list[Finished] = []
    rendered = execution.timers_json([c.run.timer for c in claims])
    last_flush = time.monotonic()
    ran = 0
    unmarked: list[Claim] = []  # successes not recorded yet that still count as the slot
    for index, (claim, timer_json) in enumerate(zip(claims, rendered, strict=True)):
        if index:
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
