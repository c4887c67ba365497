"""What the timers domain hands to the layer above it, without importing it.

``timers`` knows nothing of actions: when the fire step has claimed timers that have
actions, it gives them to the handler registered here at start-up (``ActionsConfig.ready``
registers ``actions.services.runs_create_for_fired``), inside the claim's transaction. The
reconciler's "recover action runs" step is registered the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class ClaimedTimer:
    """A timer the fire step just moved to ``fired`` (values as stored by the claim)."""

    id: UUID
    tenant_id: str
    fire_at: datetime
    fired_at: datetime
    lateness_ms: int
    state_version: int
    action_bundle: Any


# Called in the claim's transaction with the claimed timers that have actions.
FiredHandler = Callable[[Sequence[ClaimedTimer]], None]
# One reconciler step: re-publish what the layer above lost; returns how many it recovered.
RecoverHandler = Callable[[datetime, int], int]

# Called in the cancel's transaction with a fired timer just cancelled: stop its runs that have
# not started (pending retries, waiting runs, escalations).
CancelledHandler = Callable[[UUID], object]

_fired_handler: FiredHandler | None = None
_cancelled_handler: CancelledHandler | None = None
_recover_handler: RecoverHandler | None = None


def register_fired_handler(handler: FiredHandler) -> None:
    global _fired_handler
    _fired_handler = handler


def register_cancelled_handler(handler: CancelledHandler) -> None:
    global _cancelled_handler
    _cancelled_handler = handler


def cancelled_handler() -> CancelledHandler:
    if _cancelled_handler is None:
        raise ImproperlyConfigured("no cancelled-timer handler registered: is 'actions' in INSTALLED_APPS?")
    return _cancelled_handler


def register_recover_handler(handler: RecoverHandler) -> None:
    global _recover_handler
    _recover_handler = handler


def fired_handler() -> FiredHandler:
    if _fired_handler is None:
        raise ImproperlyConfigured("no fired-timer handler registered: is 'actions' in INSTALLED_APPS?")
    return _fired_handler


def recover_handler() -> RecoverHandler:
    if _recover_handler is None:
        raise ImproperlyConfigured("no action-run recovery registered: is 'actions' in INSTALLED_APPS?")
    return _recover_handler
