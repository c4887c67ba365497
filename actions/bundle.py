"""Typed view of a timer's ``actionBundle``, parsed once at the boundary (API or fire step)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actions.errors import ParameterError

MAX_ACTIONS = 20
MAX_ESCALATION_DEPTH = 3
ACTION_ID_MAX = 100


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_initial_ms: int = 1000
    backoff_multiplier: float = 2.0


@dataclass(frozen=True)
class Escalation:
    after_attempts: int
    escalates_to: ActionSpec


@dataclass(frozen=True)
class ActionSpec:
    id: str
    kind: str
    parameters: dict[str, Any]
    escalation: Escalation | None = None


@dataclass(frozen=True)
class ActionBundle:
    actions: tuple[ActionSpec, ...]
    concurrency: int = 1
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)


def _int(raw: Any, path: str, *, minimum: int, maximum: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ParameterError(path, "must be an integer")
    if not minimum <= raw <= maximum:
        raise ParameterError(path, f"must be between {minimum} and {maximum}")
    return raw


def _object(raw: Any, path: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ParameterError(path, "must be an object")
    return raw


def _unknown_keys(raw: dict[str, Any], allowed: set[str], path: str) -> None:
    extra = sorted(set(raw) - allowed)
    if extra:
        raise ParameterError(f"{path}.{extra[0]}", f"unknown field; allowed: {', '.join(sorted(allowed))}")


def _retry_policy(raw: Any, path: str) -> RetryPolicy:
    if raw is None:
        return RetryPolicy()
    obj = _object(raw, path)
    _unknown_keys(obj, {"maxAttempts", "backoffInitialMs", "backoffMultiplier"}, path)
    default = RetryPolicy()
    multiplier = obj.get("backoffMultiplier", default.backoff_multiplier)
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or not 1 <= multiplier <= 10:
        raise ParameterError(f"{path}.backoffMultiplier", "must be a number between 1 and 10")
    return RetryPolicy(
        max_attempts=_int(obj.get("maxAttempts", default.max_attempts), f"{path}.maxAttempts", minimum=1, maximum=100),
        backoff_initial_ms=_int(
            obj.get("backoffInitialMs", default.backoff_initial_ms),
            f"{path}.backoffInitialMs",
            minimum=0,
            maximum=86_400_000,
        ),
        backoff_multiplier=float(multiplier),
    )


def _action(raw: Any, path: str, depth: int, seen_ids: set[str]) -> ActionSpec:
    obj = _object(raw, path)
    _unknown_keys(obj, {"id", "kind", "parameters", "escalation"}, path)
    action_id = obj.get("id")
    if not isinstance(action_id, str) or not action_id.strip() or len(action_id) > ACTION_ID_MAX:
        raise ParameterError(f"{path}.id", f"must be a non-empty string of at most {ACTION_ID_MAX} characters")
    if action_id in seen_ids:
        raise ParameterError(f"{path}.id", f"duplicate action id '{action_id}'")
    seen_ids.add(action_id)
    kind = obj.get("kind")
    if not isinstance(kind, str):
        raise ParameterError(f"{path}.kind", "must be a string")
    parameters = obj.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ParameterError(f"{path}.parameters", "must be an object")
    escalation = None
    if obj.get("escalation") is not None:
        esc = _object(obj["escalation"], f"{path}.escalation")
        _unknown_keys(esc, {"afterAttempts", "escalatesTo"}, f"{path}.escalation")
        if depth >= MAX_ESCALATION_DEPTH:
            raise ParameterError(f"{path}.escalation", f"escalations nest at most {MAX_ESCALATION_DEPTH} levels")
        if "escalatesTo" not in esc:
            raise ParameterError(f"{path}.escalation.escalatesTo", "is required")
        escalation = Escalation(
            after_attempts=_int(
                esc.get("afterAttempts", 1), f"{path}.escalation.afterAttempts", minimum=1, maximum=100
            ),
            escalates_to=_action(esc["escalatesTo"], f"{path}.escalation.escalatesTo", depth + 1, seen_ids),
        )
    return ActionSpec(id=action_id, kind=kind, parameters=parameters, escalation=escalation)


def parse_bundle(raw: Any, path: str = "actionBundle") -> ActionBundle:
    """Parse the stored/posted JSON form, or ParameterError whose ``field`` is the dotted path
    (``actionBundle.actions[0].id``). Kind-specific parameters are checked by the runners."""
    obj = _object(raw, path)
    _unknown_keys(obj, {"actions", "concurrency", "retryPolicy"}, path)
    actions_raw = obj.get("actions", [])
    if not isinstance(actions_raw, list):
        raise ParameterError(f"{path}.actions", "must be a list")
    if len(actions_raw) > MAX_ACTIONS:
        raise ParameterError(f"{path}.actions", f"at most {MAX_ACTIONS} actions per timer")
    seen: set[str] = set()
    actions = tuple(_action(a, f"{path}.actions[{i}]", 0, seen) for i, a in enumerate(actions_raw))
    concurrency = _int(obj.get("concurrency", 1), f"{path}.concurrency", minimum=1, maximum=MAX_ACTIONS)
    return ActionBundle(
        actions=actions,
        concurrency=concurrency,
        retry_policy=_retry_policy(obj.get("retryPolicy"), f"{path}.retryPolicy"),
    )


def iter_specs(bundle: ActionBundle) -> list[tuple[str, ActionSpec]]:
    """Every action in the bundle, escalations included, with its dotted path."""
    out: list[tuple[str, ActionSpec]] = []
    for i, spec in enumerate(bundle.actions):
        path = f"actionBundle.actions[{i}]"
        current: ActionSpec | None = spec
        while current is not None:
            out.append((path, current))
            if current.escalation is None:
                break
            path += ".escalation.escalatesTo"
            current = current.escalation.escalates_to
    return out
