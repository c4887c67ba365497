"""Create and cancel bodies: parsed and checked field by field, with messages naming the field.

The rules on when a timer fires (positive, future, horizon) are ``timers.services.timer_create``'s;
this module only parses ``duration`` and ``fireAt`` into a ``TimerSpec``.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty

from actions.bundle import iter_specs, parse_bundle
from actions.errors import ParameterError
from actions.runners import get_runner
from actions.runners.agent_prompt import binding_problem
from timers.durations import DurationError, parse_duration
from timers.ecosystem import EcosystemError, apply_ecosystem, ecosystem_schema, parse_ecosystem
from timers.limits import oversized_fields
from timers.services import EXACTLY_ONE_WHEN, BatchItem, TimerSpec, request_fingerprint

MAX_NAME = 200
MAX_LABELS = 64
MAX_LABEL_KEY = 100
MAX_LABEL_VALUE = 500
MAX_JSON_DEPTH = 32
REGION_LABEL = "minoots.io/region"
REGION_HEADER = "x-minoots-region"


# RFC 3339 section 5.6 date-time: full-date "T" full-time, "T"/"Z" in either case, seconds
# required, any number of fraction digits. fromisoformat alone also takes ISO-8601 forms that
# are not RFC 3339 (week dates, basic format, hour-only times).
_RFC3339 = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ](?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?P<fraction>\.[0-9]+)?(?P<offset>[Zz]|[+-][0-9]{2}:[0-9]{2})?",
    re.ASCII,
)
_RFC3339_EXAMPLE = "e.g. 2030-01-01T14:00:00Z or 2030-01-01T16:00:00+02:00"


def parse_rfc3339(value: Any) -> datetime:
    """An aware UTC datetime from an RFC 3339 timestamp with an offset; ValidationError otherwise."""
    if not isinstance(value, str):
        raise serializers.ValidationError(f"must be an RFC 3339 timestamp string, {_RFC3339_EXAMPLE}")
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        raise serializers.ValidationError(f"'{value[:64]}' is not an RFC 3339 timestamp, {_RFC3339_EXAMPLE}")
    if match["offset"] is None:
        raise serializers.ValidationError("must include a UTC offset (e.g. 'Z' or '+02:00')")
    fraction = (match["fraction"] or "")[:7]  # microseconds: Python keeps at most 6 digits
    offset = "+00:00" if match["offset"] in ("Z", "z") else match["offset"]
    try:
        parsed = datetime.fromisoformat(f"{match['date']}T{match['time']}{fraction}{offset}")
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:  # 2030-02-30, 25:00, or beyond year 9999 in UTC
        raise serializers.ValidationError(f"'{value[:64]}' is not a valid date and time, {_RFC3339_EXAMPLE}") from exc


class AnyJSONField(serializers.Field[Any, Any, Any, Any]):
    """Pass-through for fields whose type we check ourselves (to give precise messages)."""

    def to_internal_value(self, data: Any) -> Any:
        return data

    def to_representation(self, value: Any) -> Any:
        return value


# The subclasses only tell the OpenAPI schema what each pass-through field holds.
@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "integer"}], "example": "5m"})
class DurationInputField(AnyJSONField):
    pass


@extend_schema_field({"type": "string", "format": "date-time", "example": "2030-01-01T14:00:00Z"})
class TimestampInputField(AnyJSONField):
    pass


@extend_schema_field({"type": "object", "additionalProperties": True, "nullable": True})
class ObjectInputField(AnyJSONField):
    pass


@extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}, "nullable": True})
class LabelsInputField(AnyJSONField):
    pass


@extend_schema_field(ecosystem_schema())
class EcosystemInputField(AnyJSONField):
    pass


def storable_json_problem(value: Any) -> str | None:
    """Why ``value`` cannot be stored in a Postgres JSON/text column, or None.

    Postgres refuses NUL characters and strings that are not valid UTF-8 (lone surrogates,
    which Python's json module accepts), and deep nesting makes json.dumps hit the recursion
    limit. Iterative, so a deep document cannot blow the stack here either.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"is nested deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(item, dict):
            stack.extend((k, depth + 1) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "must not contain NUL characters (\\u0000)"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "must not contain unpaired UTF-16 surrogates (invalid Unicode)"
    return None


_FIELD_ARGS = {"metadata": "metadata", "actionBundle": "action_bundle", "agentBinding": "agent_binding"}
_NO_VALUES: dict[str, Any] = dict.fromkeys(_FIELD_ARGS.values())


class StrictInput(serializers.Serializer[Any]):
    """A JSON object body whose unknown fields are refused (a typo must not pass silently) and
    whose values can all be stored."""

    # The keys of the object being validated (None outside to_internal_value).
    _present: frozenset[str] | None = None

    def to_internal_value(self, data: Any) -> Any:
        self.refuse_unstrict(data)
        self._present = frozenset(data)
        try:
            return super().to_internal_value(data)
        finally:
            self._present = None

    @property
    def _writable_fields(self) -> Any:
        # Only the fields the body has, and those that must be or have a default: DRF would
        # raise and catch SkipField for each of the others, most of validating a small body
        # (a batch validates a thousand).
        present = self._present
        for field in super()._writable_fields:
            if present is None or field.field_name in present or field.required or field.default is not empty:
                yield field

    def refuse_unstrict(self, data: Any, *, unchecked: tuple[str, ...] = ()) -> None:
        """A ValidationError for a body that is not an object, has an unknown field, or a value
        (but those of ``unchecked``) that cannot be stored or is not the string it must be."""
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["The body must be a JSON object"]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {unknown[0]: [f"unknown field; allowed fields: {', '.join(self.fields)}"]}
            )
        for name, value in data.items():
            if name in unchecked:
                continue
            problem = storable_json_problem(value)
            if problem:
                raise serializers.ValidationError({name: [problem]})
            # DRF's CharField would turn a number into a string; the schema says string.
            if isinstance(self.fields[name], serializers.CharField) and not isinstance(value, (str, type(None))):
                raise serializers.ValidationError({name: ["must be a string"]})


def parse_when(attrs: dict[str, Any]) -> dict[str, Any]:
    """``attrs`` with exactly one of ``duration`` (parsed to a timedelta) and ``fireAt``
    (parsed to an aware datetime); a ValidationError naming the field otherwise."""
    duration, fire_at = attrs.get("duration"), attrs.get("fireAt")
    if (duration is None) == (fire_at is None):
        raise serializers.ValidationError({"duration": [EXACTLY_ONE_WHEN]})
    if duration is not None:
        try:
            attrs["duration"] = parse_duration(duration)
        except DurationError as exc:
            raise serializers.ValidationError({"duration": [str(exc)]}) from exc
    else:
        try:
            attrs["fireAt"] = parse_rfc3339(fire_at)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({"fireAt": exc.detail}) from exc
    return attrs


class TimerCreateInput(StrictInput):
    """Body of POST /api/timers, as the original MINOOTS clients send it."""

    tenantId = serializers.CharField(required=False, max_length=64)
    requestedBy = serializers.CharField(required=False, max_length=200, allow_blank=True)
    name = serializers.CharField(
        required=False, max_length=MAX_NAME, help_text="default: timer_<creation time in epoch milliseconds>"
    )
    duration = DurationInputField(
        required=False, help_text="'500ms', '30s', '5m', '1h30m', 'PT15M' or an integer of milliseconds"
    )
    fireAt = TimestampInputField(required=False, help_text="RFC 3339 timestamp with offset")
    metadata = ObjectInputField(required=False, allow_null=True, help_text="any JSON object, at most 64 KiB")
    labels = LabelsInputField(required=False, allow_null=True, help_text="at most 64 string labels")
    actionBundle = ObjectInputField(
        required=False,
        allow_null=True,
        help_text="{actions: [{id, kind, parameters, escalation?}], concurrency, retryPolicy?}; at most 64 KiB",
    )
    agentBinding = ObjectInputField(required=False, allow_null=True)
    ecosystem = EcosystemInputField(required=False, allow_null=True)

    def __init__(self, *args: Any, tenant_id: str = "", region: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tenant_id = tenant_id
        # The x-minoots-region header of the original clients: label minoots.io/region unless
        # the body's labels set it.
        self.region = region

    @staticmethod
    def _refuse_oversized(field: str, value: Any) -> None:
        """The domain's size rule on one field (timers.limits; timer_create applies it again),
        here so the error comes with the field's other errors."""
        for _, reason in oversized_fields(**{**_NO_VALUES, _FIELD_ARGS[field]: value}):
            raise serializers.ValidationError(reason)

    def validate_metadata(self, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise serializers.ValidationError("must be a JSON object")
        self._refuse_oversized("metadata", value)
        return value

    def validate_labels(self, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise serializers.ValidationError("must be an object of string keys to string values")
        if len(value) > MAX_LABELS:
            raise serializers.ValidationError(f"at most {MAX_LABELS} labels")
        for key, item in value.items():
            if not key or len(key) > MAX_LABEL_KEY or ":" in key:
                raise serializers.ValidationError(
                    f"label key '{key[:40]}' must be 1-{MAX_LABEL_KEY} characters without ':'"
                )
            if not isinstance(item, str):
                raise serializers.ValidationError(f"label '{key}' must have a string value")
            if len(item) > MAX_LABEL_VALUE:
                raise serializers.ValidationError(f"label '{key}' value exceeds {MAX_LABEL_VALUE} characters")
        return value

    def validate_agentBinding(self, value: Any) -> dict[str, Any] | None:
        if value is not None and not isinstance(value, dict):
            raise serializers.ValidationError("must be a JSON object")
        self._refuse_oversized("agentBinding", value)
        return value

    def validate_actionBundle(self, value: Any) -> dict[str, Any] | None:
        if value is None:
            return None
        # Before its actions are parsed and validated: a huge bundle costs nothing more.
        self._refuse_oversized("actionBundle", value)
        try:
            bundle = parse_bundle(value)
            for path, spec in iter_specs(bundle):
                try:
                    get_runner(spec.kind).validate(spec.parameters, tenant_id=self.tenant_id)
                except ParameterError as exc:
                    # A runner names its parameter; the message names the action's path in the bundle.
                    where = f"{path}.kind" if exc.field == "kind" else f"{path}.parameters.{exc.field}"
                    raise ParameterError(where, f"(action '{spec.id}') {exc.message}") from exc
        except ParameterError as exc:
            # Prefix with actionBundle's own key removed: the error handler adds the field name.
            raise serializers.ValidationError(f"{exc.field.removeprefix('actionBundle.')}: {exc.message}") from exc
        assert isinstance(value, dict)  # parse_bundle accepts only a JSON object
        return value

    def validate_ecosystem(self, value: Any) -> dict[str, Any] | None:
        if value is None:
            return None
        try:
            return parse_ecosystem(value)
        except EcosystemError as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # Object-level: it looks at several fields (DRF runs it only once every field is valid).
        attrs = parse_when(attrs)
        labels = dict(attrs.get("labels") or {})
        if self.region and REGION_LABEL not in labels:
            labels[REGION_LABEL] = self.region
        metadata, labels = apply_ecosystem(
            metadata=attrs.get("metadata") or {}, labels=labels, incoming=attrs.get("ecosystem")
        )
        if len(labels) > MAX_LABELS:
            raise serializers.ValidationError(
                {"labels": [f"at most {MAX_LABELS} labels, with those of the ecosystem and the region ({len(labels)})"]}
            )
        self._refuse_oversized_after_merge(metadata)
        attrs["metadata"], attrs["labels"] = metadata, labels
        self._refuse_undeliverable_agent_prompt(attrs)
        return attrs

    def _refuse_undeliverable_agent_prompt(self, attrs: dict[str, Any]) -> None:
        """An agent_prompt action needs an agentBinding that can receive it (its adapter and
        target): refused here, at create, rather than failing at every attempt."""
        bundle = attrs.get("actionBundle")
        if bundle is None:
            return
        kinds = {spec.kind for _, spec in iter_specs(parse_bundle(bundle))}
        if "agent_prompt" not in kinds:
            return
        problem = binding_problem(attrs.get("agentBinding"), tenant_id=self.tenant_id)
        if problem is not None:
            field, reason = problem
            raise serializers.ValidationError({"agentBinding": [f"{field.removeprefix('agentBinding.')}: {reason}"]})

    def _refuse_oversized_after_merge(self, metadata: dict[str, Any]) -> None:
        try:
            self._refuse_oversized("metadata", metadata)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({"metadata": exc.detail}) from exc

    def validated_item(self, body: Any) -> dict[str, Any]:
        """``run_validation(body)``: the same validated attributes, or the same ValidationError.

        A batch validates a thousand bodies (and a single create one per request), and DRF's generic machinery (a ``run_validation``
        per field, its validators and empty-value checks, the error collection) is most of the
        cost of a plain one. So a body whose every value passes its field's checks as it is
        goes through the same rules without that machinery: the checks of ``refuse_unstrict``,
        each declared CharField's own settings (a string already trimmed, not blank, within
        its ``max_length``), the ``validate_<field>`` methods and ``validate``. Anything else
        (a value DRF would convert, trim or refuse, any error) is left to ``run_validation``,
        so that a refused body gets exactly a single create's error."""
        data = self._fast_validation(body)
        return self.run_validation(body) if data is None else data

    def _fast_validation(self, body: Any) -> dict[str, Any] | None:
        """The validated attributes of ``body``, or None where ``run_validation`` must decide."""
        if type(body) is not dict:
            return None
        # The declared fields, not ``self.fields``: that one deep-copies every field for each new
        # serializer (a single create makes one per request), and only their settings are read.
        fields = self._declared_fields
        attrs: dict[str, Any] = {}
        for name, value in body.items():
            field = fields.get(name)
            if field is None or storable_json_problem(value) is not None:
                return None
            if isinstance(field, serializers.CharField):
                if not _plain_string(field, value):
                    return None
            elif value is None and not field.allow_null:
                return None
            check = getattr(self, f"validate_{name}", None)
            if check is not None:
                try:
                    value = check(value)
                except (serializers.ValidationError, DjangoValidationError):
                    return None
            attrs[name] = value
        try:
            return self.validate(attrs)
        except (serializers.ValidationError, DjangoValidationError):
            return None

    def to_spec(self, *, requested_by: str) -> TimerSpec:
        """The parsed body; ``timer_create`` refuses a duration or fireAt its rules do not allow."""
        return self.spec_from(self.validated_data, requested_by=requested_by)

    @staticmethod
    def spec_from(data: dict[str, Any], *, requested_by: str) -> TimerSpec:
        """The TimerSpec of validated attributes (``run_validation``'s, or ``validated_data``)."""
        return TimerSpec(
            name=data.get("name") or f"timer_{int(time.time() * 1000)}",
            duration=data.get("duration"),
            fire_at=data.get("fireAt"),
            requested_by=data.get("requestedBy") or requested_by,
            metadata=data.get("metadata") or {},
            labels=data.get("labels") or {},
            action_bundle=data.get("actionBundle"),
            agent_binding=data.get("agentBinding"),
        )


MAX_IDEMPOTENCY_KEY = 200


def idempotency_key_problem(key: str) -> str | None:
    """Why ``key`` is not an Idempotency-Key (1-200 printable ASCII characters), or None."""
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable() or not key.isascii():
        return f"must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters"
    return None


class TimerBatchItemInput(TimerCreateInput):
    """One timer of POST /api/timers/batch: a create body, and its own Idempotency-Key."""

    idempotencyKey = serializers.CharField(
        required=False,
        max_length=MAX_IDEMPOTENCY_KEY,
        trim_whitespace=False,
        help_text="this timer's Idempotency-Key: the header's semantics, per timer",
    )

    def validate_idempotencyKey(self, value: str) -> str:
        problem = idempotency_key_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    @classmethod
    def batch_item_from(cls, data: dict[str, Any], body: dict[str, Any], *, requested_by: str) -> BatchItem:
        """The ``BatchItem`` of one validated timer (``data``, of ``body`` as sent). Its key's
        fingerprint is of the body without the key, as a single create's is of its body without
        the header: the same timer sent either way (API, batch, ``minoots timers import``) is
        the same request."""
        key = data.get("idempotencyKey")
        fingerprint = request_fingerprint({k: v for k, v in body.items() if k != "idempotencyKey"}) if key else ""
        spec = cls.spec_from(data, requested_by=requested_by)
        return BatchItem(spec=spec, idempotency_key=key, fingerprint=fingerprint)


def _plain_string(field: serializers.CharField, value: Any) -> bool:
    """Whether ``field`` takes ``value`` as it is: a string it would neither trim nor refuse
    (blank, or longer than its ``max_length``); NUL and surrogates are ``refuse_unstrict``'s."""
    return (
        type(value) is str
        and value != ""
        and (not field.trim_whitespace or value.strip() == value)
        and (field.max_length is None or len(value) <= field.max_length)
        and (field.min_length is None or len(value) >= field.min_length)
    )


@extend_schema_field(TimerBatchItemInput(many=True))
class BatchItemsField(serializers.ListField):
    """The ``timers`` of a batch, each checked on its own later (one bad timer is its own 400)."""

    child = AnyJSONField(allow_null=True)

    def to_internal_value(self, data: Any) -> list[Any]:
        if not isinstance(data, list):
            raise serializers.ValidationError("must be a list of timers (create bodies)")
        if not data:
            raise serializers.ValidationError("must hold at least one timer")
        limit: int = settings.MINOOTS_BATCH_MAX
        if len(data) > limit:
            raise serializers.ValidationError(f"at most {limit} timers per batch (MINOOTS_BATCH_MAX), not {len(data)}")
        return data


class TimerBatchInput(StrictInput):
    """Body of POST /api/timers/batch: ``{"timers": [<create body>, ...]}``."""

    timers = BatchItemsField(help_text="create bodies, each with an optional idempotencyKey")
    tenantId = serializers.CharField(required=False, max_length=64)

    def to_internal_value(self, data: Any) -> Any:
        # Each timer gets StrictInput's value checks as its own body: one bad timer is its own 400.
        self.refuse_unstrict(data, unchecked=("timers",))
        return serializers.Serializer.to_internal_value(self, data)


class TimerCancelInput(StrictInput):
    """Body of POST /api/timers/{id}/cancel; ``tenantId`` / ``requestedBy`` are checked like on create."""

    reason = serializers.CharField(required=False, allow_blank=True, max_length=500)
    tenantId = serializers.CharField(required=False, max_length=64)
    requestedBy = serializers.CharField(required=False, max_length=200, allow_blank=True)


class TimerRescheduleInput(StrictInput):
    """Body of PATCH /api/timers/{id}: a new ``fireAt``, or a ``duration`` from now (exactly
    one), optionally guarded by ``stateVersion`` (or the ``If-Match`` header)."""

    duration = DurationInputField(
        required=False, help_text="from now: '500ms', '30s', '5m', '1h30m', 'PT15M' or an integer of milliseconds"
    )
    fireAt = TimestampInputField(required=False, help_text="RFC 3339 timestamp with offset")
    stateVersion = serializers.IntegerField(
        required=False, min_value=1, max_value=2**31 - 1, help_text="apply only to this state version (else 409)"
    )
    tenantId = serializers.CharField(required=False, max_length=64)
    requestedBy = serializers.CharField(required=False, max_length=200, allow_blank=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return parse_when(attrs)
