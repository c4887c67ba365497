"""The ``agent_prompt`` action: a prompt delivered to the timer's bound agent.

The original control plane's agents are bound to a timer by its ``agentBinding``
(``{adapter, target, payloadTemplate?, acknowledgementTimeoutMs?}``). When the timer fires,
this action POSTs to the binding's target, as a signed webhook (the ``webhook`` runner does the
delivery, with every one of its safety rules: http(s) only, the address resolved, checked
against private ranges and pinned, response caps, the hard deadline, Standard Webhooks
signatures with the tenant's secret, the same ``webhook-id`` on every retry):

    {"event": "timer.agent_prompt", "prompt": <payload>, "agent": {"adapter", "target"},
     "timer": <the timer, as the API shows it, without its actionBundle>}

``<payload>`` is the action's ``parameters.payload``, else the binding's ``payloadTemplate``,
with ``{{timer.<field>}}`` placeholders filled in from the timer (dotted paths reach into it:
``{{timer.metadata.ticket}}``; a string that is only a placeholder takes the value's own JSON
type). The agent acknowledges with any 2xx within ``acknowledgementTimeoutMs`` (at most the
webhook's 60 s; default ACTION_WEBHOOK_TIMEOUT_MS); anything else is a failed attempt,
retried by the bundle's retry policy. Only the ``webhook`` adapter delivers today; a timer whose
bundle has an ``agent_prompt`` action and another adapter is refused at create (400 naming
``agentBinding.adapter``), and an attempt checks again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from actions.errors import ActionError, ParameterError
from actions.runners.base import ActionContext, ActionResult, Runner
from actions.runners.webhook import MAX_TIMEOUT_MS, WebhookRunner

ADAPTERS = ("webhook",)
_PLACEHOLDER = re.compile(r"\{\{\s*timer\.([A-Za-z0-9_.]+)\s*\}\}")
_MISSING = object()


@dataclass(frozen=True)
class AgentPromptParams:
    payload: Any = None  # None: the binding's payloadTemplate

    def to_json(self) -> dict[str, Any]:
        return {} if self.payload is None else {"payload": self.payload}


def binding_problem(binding: Any, *, tenant_id: str) -> tuple[str, str] | None:
    """``(field, reason)`` when ``binding`` (a timer's agentBinding) cannot receive an
    agent_prompt, fields named as the API spells them; None when it can."""
    if not isinstance(binding, dict):
        return ("agentBinding", "is required by an agent_prompt action: {adapter, target, ...}")
    adapter = binding.get("adapter")
    if adapter not in ADAPTERS:
        return (
            "agentBinding.adapter",
            f"'{adapter}' cannot deliver an agent_prompt yet; adapters that can: {', '.join(ADAPTERS)}",
        )
    try:
        _webhook_params(binding, tenant_id=tenant_id)
    except ParameterError as exc:
        field = {"url": "target", "timeoutMs": "acknowledgementTimeoutMs"}.get(exc.field, exc.field)
        return (f"agentBinding.{field}", exc.message)
    return None


def _webhook_params(binding: dict[str, Any], *, tenant_id: str, body: Any = None) -> Any:
    ack = binding.get("acknowledgementTimeoutMs", settings.ACTION_WEBHOOK_TIMEOUT_MS)
    if isinstance(ack, int) and not isinstance(ack, bool) and ack > MAX_TIMEOUT_MS:
        ack = MAX_TIMEOUT_MS  # the longest a webhook attempt may wait
    parameters: dict[str, Any] = {"url": binding.get("target"), "timeoutMs": ack}
    if body is not None:
        parameters["body"] = body
    return WebhookRunner().parse(parameters, tenant_id=tenant_id)


def _lookup(timer: dict[str, Any], path: str) -> Any:
    value: Any = timer
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def render(template: Any, timer: dict[str, Any]) -> Any:
    """``template`` with its ``{{timer.<path>}}`` placeholders filled in (unknown ones left)."""
    if isinstance(template, dict):
        return {key: render(value, timer) for key, value in template.items()}
    if isinstance(template, list):
        return [render(value, timer) for value in template]
    if not isinstance(template, str):
        return template
    whole = _PLACEHOLDER.fullmatch(template)
    if whole:
        value = _lookup(timer, whole.group(1))
        return template if value is _MISSING else value

    def fill(match: re.Match[str]) -> str:
        value = _lookup(timer, match.group(1))
        if value is _MISSING:
            return match.group(0)
        return value if isinstance(value, str) else str(value)

    return _PLACEHOLDER.sub(fill, template)


class AgentPromptRunner(Runner[AgentPromptParams]):
    kind = "agent_prompt"

    def parse(self, parameters: dict[str, Any], *, tenant_id: str) -> AgentPromptParams:
        unknown = sorted(set(parameters) - {"payload"})
        if unknown:
            raise ParameterError(unknown[0], "unknown parameter; allowed: payload")
        return AgentPromptParams(payload=parameters.get("payload"))

    def attempt(self, params: AgentPromptParams, context: ActionContext) -> ActionResult:
        binding = context.timer.get("agentBinding")
        problem = binding_problem(binding, tenant_id=context.tenant_id)
        if problem is not None:
            raise ActionError(f"{problem[0]}: {problem[1]}", permanent=True)
        assert isinstance(binding, dict)
        template = params.payload if params.payload is not None else binding.get("payloadTemplate")
        body = {
            "event": "timer.agent_prompt",
            "prompt": render(template, context.timer),
            "agent": {"adapter": binding["adapter"], "target": binding["target"]},
            "timer": context.timer,
        }
        try:
            webhook = _webhook_params(binding, tenant_id=context.tenant_id, body=body)
        except ParameterError as exc:
            raise ActionError(f"agentBinding: {exc.message}", permanent=True) from exc
        result = WebhookRunner().attempt(webhook, context)
        return ActionResult(
            summary=f"agent acknowledged: {result.summary}",
            http_status=result.http_status,
            output=result.output,
        )
