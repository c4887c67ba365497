"""The OpenAPI schema tells the truth: nullable fields, error responses, strict bodies.

Built in process (drf-spectacular's generator, as /api/schema/ serves it); the live check that
the server answers as the schema says is tests/ops/test_schemathesis.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from actions.models import ActionAttempt, ActionRun
from actions.serializers import ActionAttemptOutput, ActionRunOutput
from tests.factories import schedule_timer
from timers.models import Tenant, Timer
from timers.serializers import TimerOutput

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    generated: dict[str, Any] = SchemaGenerator().get_schema(request=None, public=True)
    return generated


def _props(schema: dict[str, Any], component: str) -> dict[str, Any]:
    props: dict[str, Any] = schema["components"]["schemas"][component]["properties"]
    return props


def _nullable(schema: dict[str, Any], component: str) -> set[str]:
    return {name for name, prop in _props(schema, component).items() if prop.get("nullable")}


def _wire_names(serializer: Any) -> dict[str, str]:
    """Wire name -> model field name, for the serializer fields read straight from a model field."""
    names = {}
    for wire, field in serializer().fields.items():
        source = field.source
        if source and "." not in source and source != "*":
            names[wire] = source
    return names


def test_timer_fields_the_server_can_give_as_null_are_nullable(schema: dict[str, Any]) -> None:
    expected = {
        "firedAt",
        "settledAt",
        "cancelledAt",
        "latenessMs",
        "cancelReason",
        "cancelledBy",
        "failureReason",
        "actionBundle",
        "agentBinding",
    }
    assert _nullable(schema, "TimerOutput") == expected
    assert _nullable(schema, "TimerDetailOutput") == expected
    # The others are always given.
    assert set(_props(schema, "TimerOutput")) - expected >= {"id", "name", "status", "fireAt", "stateVersion"}


def test_run_and_attempt_fields_the_server_can_give_as_null_are_nullable(schema: dict[str, Any]) -> None:
    assert _nullable(schema, "ActionRunOutput") == {"escalatedFrom", "nextAttemptAt", "finishedAt"}
    assert _nullable(schema, "ActionAttemptOutput") == {"finishedAt", "httpStatus", "exitCode", "durationMs"}


@pytest.mark.parametrize(
    ("serializer", "model", "component"),
    [
        (TimerOutput, Timer, "TimerOutput"),
        (ActionRunOutput, ActionRun, "ActionRunOutput"),
        (ActionAttemptOutput, ActionAttempt, "ActionAttemptOutput"),
    ],
)
def test_every_null_model_field_on_the_wire_is_nullable(
    schema: dict[str, Any], serializer: Any, model: Any, component: str
) -> None:
    nullable_columns = {f.name for f in model._meta.concrete_fields if f.null}
    wire = _wire_names(serializer)
    must_be_nullable = {name for name, column in wire.items() if column in nullable_columns}
    assert must_be_nullable <= _nullable(schema, component)


def test_nulls_render_as_before(tenant: Tenant) -> None:
    """allow_null changes the schema only: a pending timer's null fields are still null."""
    timer = schedule_timer(tenant=tenant, in_=timedelta(minutes=5))
    data = TimerOutput(timer).data
    for key in ("firedAt", "settledAt", "cancelledAt", "latenessMs", "cancelReason", "cancelledBy", "failureReason"):
        assert data[key] is None


ERRORS = {
    ("/api/timers", "get"): {"400", "401", "403", "404", "503"},
    ("/api/timers", "post"): {"400", "401", "403", "404", "409", "413", "429", "503"},
    ("/api/timers/{timer_id}", "get"): {"401", "403", "404", "503"},
    ("/api/timers/{timer_id}", "patch"): {"400", "401", "403", "404", "409", "413", "503"},
    ("/api/timers/{timer_id}/cancel", "post"): {"400", "401", "403", "404", "409", "413", "503"},
    ("/api/timers/{timer_id}/events", "get"): {"401", "403", "404", "503"},
    ("/api/timers/stream", "get"): {"400", "401", "403", "404", "429", "503"},
}


def test_only_the_list_documents_gunicorns_uri_too_long(schema: dict[str, Any]) -> None:
    with_414 = {(p, m) for p, item in schema["paths"].items() for m, op in item.items() if "414" in op["responses"]}
    assert with_414 == {("/api/timers", "get")}


def test_no_operation_lists_drfs_format_override(schema: dict[str, Any]) -> None:
    for item in schema["paths"].values():
        for op in item.values():
            assert "format" not in {p["name"] for p in op.get("parameters", [])}


def test_the_error_body_is_a_named_component(schema: dict[str, Any]) -> None:
    error = schema["components"]["schemas"]["Error"]
    assert error["required"] == ["details", "message"]
    assert error["properties"]["message"] == {"type": "string"}
    assert error["properties"]["details"]["nullable"] is True


@pytest.mark.parametrize(("path", "method"), sorted(ERRORS))
def test_each_operation_documents_its_error_statuses_with_the_error_body(
    schema: dict[str, Any], path: str, method: str
) -> None:
    responses = schema["paths"][path][method]["responses"]
    errors = {code for code in responses if int(code) >= 400} - {"414"}
    assert errors == ERRORS[(path, method)]
    for code in errors:
        assert responses[code]["content"] == {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        assert responses[code]["description"]
    assert "Retry-After" in responses["503"]["headers"]


def test_bodies_that_refuse_unknown_fields_say_so(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    assert components["TimerCreateInput"]["additionalProperties"] is False
    assert components["TimerCancelInput"]["additionalProperties"] is False
    # ... and output components do not (clients must tolerate new fields).
    assert "additionalProperties" not in components["TimerOutput"]


def test_a_create_names_exactly_one_of_duration_and_fire_at(schema: dict[str, Any]) -> None:
    create = schema["components"]["schemas"]["TimerCreateInput"]
    assert create["oneOf"] == [{"required": ["duration"]}, {"required": ["fireAt"]}]


def test_non_blank_string_fields_of_strict_bodies_have_a_minimum_length(schema: dict[str, Any]) -> None:
    create = _props(schema, "TimerCreateInput")
    assert create["name"]["minLength"] == 1
    assert create["tenantId"]["minLength"] == 1
    assert "minLength" not in create["requestedBy"]  # blank allowed
    assert _props(schema, "TimerCancelInput")["tenantId"]["minLength"] == 1


def test_the_served_schema_has_the_same_additions(client: APIClient) -> None:
    served = client.get("/api/schema/", {"format": "json"}).json()
    assert served["components"]["schemas"]["TimerCreateInput"]["additionalProperties"] is False
    assert "Error" in served["components"]["schemas"]


@pytest.mark.parametrize("value", [0, 1.5, True, [], {}])
def test_a_string_field_of_a_strict_body_refuses_other_types(client: APIClient, value: Any) -> None:
    """Schemathesis found ``{"name": 0}`` accepted (DRF's CharField made it "0"): the schema says string."""
    response = client.post("/api/timers", {"name": value, "duration": "5m"}, format="json")
    assert response.status_code == 400
    assert response.json()["message"].startswith("name:")
    timer = client.post("/api/timers", {"name": "t", "duration": "5m"}, format="json").json()
    response = client.post(f"/api/timers/{timer['id']}/cancel", {"reason": 5}, format="json")
    assert response.status_code == 400
    assert response.json()["message"] == "reason: must be a string"
