"""The OpenAPI schema tells the truth: nullable fields, error responses, strict bodies.

Built in process (drf-spectacular's generator, as /api/schema/ serves it); the live check that
the server answers as the schema says is tests/ops/test_schemathesis.py.
"""

from __future__ import annotations

import inspect
import json
from datetime import timedelta
from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from actions.models import ActionAttempt, ActionRun
from actions.serializers import ActionAttemptOutput, ActionRunOutput
from tests.factories import schedule_timer
from timers.api.views import ApiView
from timers.models import Tenant, Timer
from timers.serializers import TimerEventOutput, TimerOutput

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
        "jitterMs",
        "ecosystem",
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
    ("/api/timers/batch", "post"): {"400", "401", "403", "404", "413", "503"},
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
        content = responses[code]["content"]
        assert list(content) == ["application/json"]
        assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
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


# --- what a reader of /api/docs/ sees: summaries, descriptions, examples ------------------------

OPERATIONS = sorted(ERRORS)


def _operation(schema: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    op: dict[str, Any] = schema["paths"][path][method]
    return op


def test_the_schema_has_exactly_the_documented_operations(schema: dict[str, Any]) -> None:
    assert {(p, m) for p, item in schema["paths"].items() for m in item} == set(ERRORS)


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_each_operation_has_its_own_summary_and_description(schema: dict[str, Any], path: str, method: str) -> None:
    """Not the base view's docstring, which drf-spectacular shows for an operation without one."""
    op = _operation(schema, path, method)
    base = inspect.getdoc(ApiView) or ""
    assert op["summary"] and len(op["summary"]) < 60
    assert len(op["description"]) > 80
    assert op["description"] != base and "Base of the timer endpoints" not in op["description"]


def test_no_two_operations_share_a_summary_or_a_description(schema: dict[str, Any]) -> None:
    ops = [_operation(schema, p, m) for p, m in OPERATIONS]
    assert len({op["summary"] for op in ops}) == len(ops)
    assert len({op["description"] for op in ops}) == len(ops)


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_each_operation_has_a_success_example_and_an_example_of_each_error(
    schema: dict[str, Any], path: str, method: str
) -> None:
    op = _operation(schema, path, method)
    for code, response in op["responses"].items():
        if code == "414":  # gunicorn's own HTML page
            continue
        for media_type, content in response["content"].items():
            examples = content.get("examples", {})
            assert examples, f"{method.upper()} {path} {code} {media_type} has no example"
            if int(code) >= 400:
                for example in examples.values():
                    assert {"message", "details"} <= set(example["value"])
                    assert example["value"]["message"]
    if method in ("post", "patch"):
        assert op["requestBody"]["content"]["application/json"]["examples"]


def _examples(schema: dict[str, Any], path: str, method: str, code: str | None = None) -> list[Any]:
    op = _operation(schema, path, method)
    if code is None:
        content = op["requestBody"]["content"]["application/json"]
    else:
        content = next(iter(op["responses"][code]["content"].values()))
    return [e["value"] for e in content["examples"].values()]


def test_the_create_examples_create_timers_shaped_like_the_response_examples(
    schema: dict[str, Any], client: APIClient
) -> None:
    (created_example,) = _examples(schema, "/api/timers", "post", "201")
    for body in _examples(schema, "/api/timers", "post"):
        response = client.post("/api/timers", body, format="json")
        assert response.status_code == 201, response.json()
        assert list(response.json()) == list(created_example)
        assert set(created_example) == set(TimerOutput().fields)
    (page,) = _examples(schema, "/api/timers", "get", "200")
    listed = client.get("/api/timers").json()
    assert list(page) == list(listed)
    assert list(page["timers"][0]) == list(listed["timers"][0])


def test_the_reschedule_and_cancel_examples_are_accepted(schema: dict[str, Any], client: APIClient) -> None:
    timer = client.post("/api/timers", {"name": "t", "duration": "10m"}, format="json").json()
    url = f"/api/timers/{timer['id']}"
    by_time, by_duration = sorted(_examples(schema, "/api/timers/{timer_id}", "patch"), key=lambda b: "fireAt" in b)[
        ::-1
    ]
    assert client.patch(url, by_time, format="json").status_code == 200  # stateVersion 1 -> 2
    response = client.patch(url, by_duration, format="json")  # guarded by stateVersion 2
    assert response.status_code == 200, response.json()
    (rescheduled,) = _examples(schema, "/api/timers/{timer_id}", "patch", "200")
    assert list(response.json()) == list(rescheduled)

    (cancelled,) = _examples(schema, "/api/timers/{timer_id}/cancel", "post", "200")
    for body in _examples(schema, "/api/timers/{timer_id}/cancel", "post"):
        timer = client.post("/api/timers", {"name": "t", "duration": "10m"}, format="json").json()
        response = client.post(f"/api/timers/{timer['id']}/cancel", body, format="json")
        assert response.status_code == 200
        assert response.json()["status"] == cancelled["status"] == "cancelled"
        assert list(response.json()) == list(cancelled)


def test_the_detail_and_events_examples_have_the_fields_the_api_gives(schema: dict[str, Any]) -> None:
    (detail,) = _examples(schema, "/api/timers/{timer_id}", "get", "200")
    assert set(detail) == set(TimerOutput().fields) | {"actionRuns"}
    run = detail["actionRuns"][0]
    assert list(run) == list(ActionRunOutput().fields)
    assert list(run["attemptRecords"][0]) == list(ActionAttemptOutput().fields)
    (events,) = _examples(schema, "/api/timers/{timer_id}/events", "get", "200")
    assert all(list(e) == list(TimerEventOutput().fields) for e in events["events"])


def test_the_stream_example_is_server_sent_events(schema: dict[str, Any]) -> None:
    (stream,) = _examples(schema, "/api/timers/stream", "get", "200")
    event = stream.split("\n\n")[1].splitlines()
    assert event[0].startswith("id: ") and event[1] == "event: fired"
    data = json.loads(event[2].removeprefix("data: "))
    assert set(data) == {"timerId", "tenantId", "name", "kind", "stateVersion", "occurredAt", "data"}
