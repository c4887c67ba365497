"""One base class for every action kind (see DESIGN.md "Actions").

A runner parses an action's stored JSON parameters into its typed parameter object once, then
runs one attempt with that object; the raw dict goes no further than ``parse``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar, final

from actions.allowlist import attempt_refusal
from actions.errors import ActionError, ParameterError


def is_utf8(text: str) -> bool:
    """False for strings JSON allows but no file, process or socket can carry (lone surrogates)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class ActionContext:
    """What a runner may know about the run it executes."""

    run_id: str
    timer_id: str
    tenant_id: str
    timer: dict[str, Any]


@dataclass(frozen=True)
class ActionResult:
    summary: str
    http_status: int | None = None
    exit_code: int | None = None
    output: str = ""


class Params(Protocol):
    """A kind's typed parameters."""

    def to_json(self) -> dict[str, Any]:
        """The normalised JSON form (what ``Runner.validate`` returns)."""
        ...


P = TypeVar("P", bound=Params)


class Runner(ABC, Generic[P]):
    """Parse parameters into ``P`` (at creation time and again at every attempt), run one attempt."""

    kind: ClassVar[str]
    # Whether ``attempt_async`` gives attempts that many can have in flight at once (a batch starts
    # them together); False: the batch runs ``attempt`` one at a time.
    concurrent: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.concurrent and cls.attempt_async is Runner.attempt_async:
            raise TypeError(f"{cls.__name__} is concurrent but has no attempt_async")

    @abstractmethod
    def parse(self, parameters: dict[str, Any], *, tenant_id: str) -> P:
        """The typed parameters, or ParameterError naming the offending parameter.

        Checks what the settings allow now, so an attempt refuses an action that was valid
        when its timer was created but is no longer (a command taken off the allow-list)."""

    @abstractmethod
    def attempt(self, params: P, context: ActionContext) -> ActionResult:
        """Execute one attempt; raise ActionError on failure."""

    def parse_at_create(self, parameters: dict[str, Any], *, tenant_id: str) -> P:
        """``parse`` plus the checks that only make sense when the action is created."""
        return self.parse(parameters, tenant_id=tenant_id)

    @final
    def validate(self, parameters: dict[str, Any], *, tenant_id: str) -> dict[str, Any]:
        """The normalised parameters, or ParameterError. Called by the API at creation time."""
        return self.parse_at_create(parameters, tenant_id=tenant_id).to_json()

    @final
    def checked(
        self,
        parameters: dict[str, Any],
        context: ActionContext,
        *,
        refusals: dict[tuple[str, str], str | None] | None = None,
    ) -> P:
        """The attempt's parameters, or ActionError (permanent) when they no longer parse or the
        tenant's allow-list no longer names the kind. ``refusals`` memoises the allow-list
        answer per (tenant, kind) across one batch's attempts (one read per tenant, not per run)."""
        key = (context.tenant_id, self.kind)
        if refusals is not None and key in refusals:
            refusal = refusals[key]
        else:
            refusal = attempt_refusal(tenant_id=context.tenant_id, kind=self.kind)
            if refusals is not None:
                refusals[key] = refusal
        if refusal is not None:
            raise ActionError(f"kind: {refusal}", permanent=True)
        try:
            return self.parse(parameters, tenant_id=context.tenant_id)
        except ParameterError as exc:
            raise ActionError(str(exc), permanent=True) from exc

    @final
    def run(self, parameters: dict[str, Any], context: ActionContext) -> ActionResult:
        """Parse, then attempt. Parameters that no longer parse, or a kind the tenant's
        allow-list no longer names, fail the attempt for good."""
        return self.attempt(self.checked(parameters, context), context)

    def attempt_async(self, params: P, context: ActionContext) -> Coroutine[Any, Any, ActionResult]:
        """The attempt as a coroutine for the process's event loop (``webhook_transport``), for
        kinds that declare ``concurrent``: many are in flight at once. Work that may touch the
        database (secrets, signing) happens here, in the caller's thread, before the coroutine
        is returned; the coroutine itself only talks to the network."""
        raise NotImplementedError(f"{self.kind} attempts run one at a time (concurrent is False)")
