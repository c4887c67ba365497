"""Every invalid create body is a 400 in the one error shape, with a message naming the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from tests.assertions import assert_error
from timers.models import Timer


def _iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


def _post(client: APIClient, body: Any) -> Any:
    return client.post("/api/timers", body, format="json")


def _assert_400_naming(response: Any, field: str) -> None:
    assert assert_error(response, 400, field=field)["details"] is not None


OMIT = object()  # the field is left out of the body

INVALID_BODIES: list[tuple[str, dict[str, Any], str]] = [
    # duration grammar
    ("unknown unit", {"duration": "5 parsecs"}, "duration"),
    ("word", {"duration": "soon"}, "duration"),
    ("empty string", {"duration": ""}, "duration"),
    ("blank string", {"duration": "   "}, "duration"),
    ("boolean", {"duration": True}, "duration"),
    ("list", {"duration": ["5m"]}, "duration"),
    ("object", {"duration": {"minutes": 5}}, "duration"),
    ("bad ISO-8601", {"duration": "PT5X"}, "duration"),
    ("ISO-8601 months", {"duration": "P1M"}, "duration"),
    ("ISO-8601 years", {"duration": "P1Y"}, "duration"),
    ("overlong text", {"duration": "1" * 65 + "s"}, "duration"),
    # zero or negative
    ("zero string", {"duration": "0s"}, "duration"),
    ("zero milliseconds", {"duration": 0}, "duration"),
    ("zero ISO-8601", {"duration": "PT0S"}, "duration"),
    ("negative milliseconds", {"duration": -5000}, "duration"),
    ("negative string", {"duration": "-5m"}, "duration"),
    ("negative ISO-8601", {"duration": "-PT5M"}, "duration"),
    # beyond the max horizon (365 days)
    ("366 days", {"duration": "366d"}, "duration"),
    ("huge milliseconds", {"duration": 10**30}, "duration"),
    ("huge ISO-8601", {"duration": "P400D"}, "duration"),
    ("huge compact", {"duration": "999999999999d"}, "duration"),
    # neither or both
    ("neither duration nor fireAt", {"duration": OMIT}, "duration"),
    ("both duration and fireAt", {"duration": "5m", "fireAt": "2099-01-01T00:00:00Z"}, "duration"),
    ("null duration and no fireAt", {"duration": None}, "duration"),
    # fireAt
    ("fireAt without offset", {"fireAt": "2099-01-01T14:00:00"}, "fireAt"),
    ("fireAt date only", {"fireAt": "2099-01-01"}, "fireAt"),
    ("fireAt not a timestamp", {"fireAt": "tomorrow at noon"}, "fireAt"),
    ("fireAt a number", {"fireAt": 1893456000}, "fireAt"),
    ("fireAt an object", {"fireAt": {"at": "2099-01-01T00:00:00Z"}}, "fireAt"),
    ("fireAt impossible date", {"fireAt": "2099-02-30T00:00:00Z"}, "fireAt"),
    ("fireAt ISO-8601 basic format", {"fireAt": "20990101T140000Z"}, "fireAt"),
    ("fireAt ISO-8601 week date", {"fireAt": "2099-W01-1T14:00:00Z"}, "fireAt"),
    ("fireAt without seconds", {"fireAt": "2099-01-01T14:00Z"}, "fireAt"),
    ("fireAt offset without colon", {"fireAt": "2099-01-01T14:00:00+0200"}, "fireAt"),
    ("fireAt offset out of range", {"fireAt": "2099-01-01T14:00:00+25:00"}, "fireAt"),
    ("fireAt past year 9999 in UTC", {"fireAt": "9999-12-31T23:59:59-01:00"}, "fireAt"),
    ("fireAt hour 24", {"fireAt": "2099-01-01T24:00:00Z"}, "fireAt"),
    ("fireAt in the past", {"fireAt": "2001-01-01T00:00:00Z"}, "fireAt"),
    ("fireAt beyond the max horizon", {"fireAt": "2999-01-01T00:00:00+00:00"}, "fireAt"),
    # name
    # ecosystem (the original's strict sub-schemas)
    ("ecosystem empty", {"ecosystem": {}}, "ecosystem"),
    ("ecosystem unknown section", {"ecosystem": {"parser": {"datasetId": "d"}}}, "ecosystem"),
    ("ecosystem empty section", {"ecosystem": {"parserator": {}}}, "ecosystem"),
    ("ecosystem unknown field", {"ecosystem": {"parserator": {"dataset": "d"}}}, "ecosystem"),
    ("ecosystem blank id", {"ecosystem": {"parserator": {"datasetId": "  "}}}, "ecosystem"),
    ("ecosystem bad enum", {"ecosystem": {"clearSeas": {"serviceTier": "gold"}}}, "ecosystem"),
    ("ecosystem threshold > 1", {"ecosystem": {"parserator": {"confidenceThreshold": 1.5}}}, "ecosystem"),
    ("ecosystem not a URL", {"ecosystem": {"reposiologist": {"repositoryUrl": "acme/app"}}}, "ecosystem"),
    ("ecosystem flag a string", {"ecosystem": {"nimbusGuardian": {"enableSecretScan": "yes"}}}, "ecosystem"),
    ("ecosystem nextSyncIso offset", {"ecosystem": {"nextSyncIso": "2030-01-01T00:00:00+02:00"}}, "ecosystem"),
    ("ecosystem a list", {"ecosystem": [{"sharedNarrative": "x"}]}, "ecosystem"),
    ("name null", {"name": None}, "name"),
    ("name too long", {"name": "n" * 201}, "name"),
    ("name blank", {"name": ""}, "name"),
    ("name an object", {"name": {"x": 1}}, "name"),
    # metadata
    ("metadata over 64 KiB", {"metadata": {"blob": "x" * (64 * 1024)}}, "metadata"),
    ("metadata a list", {"metadata": [1, 2]}, "metadata"),
    ("metadata a string", {"metadata": "x"}, "metadata"),
    # labels
    ("65 labels", {"labels": {f"k{i}": "v" for i in range(65)}}, "labels"),
    ("non-string label value", {"labels": {"env": 1}}, "labels"),
    ("null label value", {"labels": {"env": None}}, "labels"),
    ("nested label value", {"labels": {"env": {"a": "b"}}}, "labels"),
    ("labels a list", {"labels": ["env:prod"]}, "labels"),
    ("empty label key", {"labels": {"": "v"}}, "labels"),
    ("label key with a colon", {"labels": {"a:b": "v"}}, "labels"),
    ("label value too long", {"labels": {"env": "v" * 501}}, "labels"),
    # actions
    (
        "21 actions",
        {"actionBundle": {"actions": [{"id": f"a{i}", "kind": "webhook", "parameters": {}} for i in range(21)]}},
        "actionBundle",
    ),
    ("actionBundle a list", {"actionBundle": []}, "actionBundle"),
    ("actions not a list", {"actionBundle": {"actions": {}}}, "actionBundle"),
    ("unknown action kind", {"actionBundle": {"actions": [{"id": "a", "kind": "teleport"}]}}, "actionBundle"),
    ("action without id", {"actionBundle": {"actions": [{"kind": "webhook"}]}}, "actionBundle"),
    ("unknown bundle field", {"actionBundle": {"actions": [], "parallel": True}}, "actionBundle"),
    ("concurrency zero", {"actionBundle": {"actions": [], "concurrency": 0}}, "actionBundle"),
    (
        "retry policy with a string",
        {"actionBundle": {"actions": [], "retryPolicy": {"maxAttempts": "3"}}},
        "actionBundle",
    ),
    # agentBinding
    ("agentBinding a string", {"agentBinding": "agent-1"}, "agentBinding"),
    # unknown top-level fields
    ("unknown field", {"colour": "blue"}, "colour"),
    ("snake_case field", {"fire_at": "2099-01-01T00:00:00Z"}, "fire_at"),
    # tenantId / requestedBy types
    ("requestedBy too long", {"requestedBy": "r" * 201}, "requestedBy"),
]


@pytest.mark.parametrize(
    ("body", "field"),
    [pytest.param(body, field, id=case) for case, body, field in INVALID_BODIES],
)
def test_invalid_create_body_is_400_naming_the_field(client: APIClient, body: dict[str, Any], field: str) -> None:
    full: dict[str, Any] = {"name": "t", "duration": "5m"}
    if "fireAt" in body and "duration" not in body:
        full.pop("duration")
    full.update(body)
    full = {k: v for k, v in full.items() if v is not OMIT}
    response = _post(client, full)
    _assert_400_naming(response, field)
    assert not Timer.objects.exists()


def test_malformed_json_is_400_in_the_error_shape(client: APIClient) -> None:
    response = client.post("/api/timers", data='{"name": "t", "duration": ', content_type="application/json")
    assert_error(response, 400, contains="JSON")


def test_a_body_that_is_not_an_object_is_400(client: APIClient) -> None:
    response = _post(client, [{"name": "t", "duration": "5m"}])
    assert assert_error(response, 400)["message"] == "The body must be a JSON object"


def test_a_non_json_content_type_is_415_in_the_error_shape(client: APIClient) -> None:
    response = client.post("/api/timers", data="name=t&duration=5m", content_type="application/x-www-form-urlencoded")
    assert_error(response, 415)


def test_details_list_every_invalid_field(client: APIClient) -> None:
    response = _post(client, {"name": "n" * 201, "duration": "5m", "metadata": [], "labels": {"a": 1}})
    assert set(assert_error(response, 400)["details"]) == {"name", "metadata", "labels"}


def test_idempotency_key_over_200_characters_is_400(client: APIClient) -> None:
    response = client.post(
        "/api/timers", {"name": "t", "duration": "5m"}, format="json", HTTP_IDEMPOTENCY_KEY="k" * 201
    )
    _assert_400_naming(response, "Idempotency-Key")


def test_cancel_reason_over_500_characters_is_400(client: APIClient) -> None:
    timer = _post(client, {"name": "t", "duration": "5m"}).json()
    response = client.post(f"/api/timers/{timer['id']}/cancel", {"reason": "r" * 501}, format="json")
    _assert_400_naming(response, "reason")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
fields = st.sampled_from(
    ["name", "duration", "fireAt", "metadata", "labels", "actionBundle", "agentBinding", "requestedBy", "tenantId"]
)
duration_like = st.one_of(
    st.integers(min_value=-(10**15), max_value=10**15),
    st.from_regex(r"\A-?[0-9]{1,6}(ms|s|m|h|d|w)\Z"),
    st.from_regex(r"\A-?P(T[0-9]{1,5}[HMS])?\Z"),
    st.text(max_size=12),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    overrides=st.dictionaries(fields, json_values, max_size=4),
    duration=st.one_of(st.none(), duration_like),
)
def test_any_json_create_body_is_answered_with_201_or_a_400_in_the_error_shape(
    client: APIClient, overrides: dict[str, Any], duration: Any
) -> None:
    body: dict[str, Any] = {"name": "fuzz", "duration": duration, **overrides}
    response = _post(client, body)
    if body.get("tenantId") not in (None, "acme"):
        assert response.status_code == 403, response.content
    else:
        assert response.status_code in (201, 400), response.content
    if response.status_code == 201:
        assert Timer.objects.filter(pk=response.json()["id"], tenant_id="acme").exists()
    else:
        assert_error(response, response.status_code)


# --- input Postgres cannot store, and documents that would exhaust the stack ---------------

UNSTORABLE: list[tuple[str, bytes, str]] = [
    ("NUL in a metadata value", b'"metadata": {"k": "a\\u0000b"}', "metadata"),
    ("NUL in a metadata key", b'"metadata": {"k\\u0000": "b"}', "metadata"),
    ("NUL in a label value", b'"labels": {"k": "a\\u0000b"}', "labels"),
    ("NUL in agentBinding", b'"agentBinding": {"agent": "\\u0000"}', "agentBinding"),
    ("NUL in the name", b'"name": "a\\u0000b"', "name"),
    ("NUL in requestedBy", b'"requestedBy": "a\\u0000b"', "requestedBy"),
    ("lone surrogate in metadata", b'"metadata": {"x": "\\udc00"}', "metadata"),
    ("lone surrogate in a label", b'"labels": {"x": "\\ud800"}', "labels"),
    ("lone surrogate in the name", b'"name": "\\ud800"', "name"),
    ("metadata nested 33 levels", b'"metadata": ' + b'{"a":' * 33 + b"1" + b"}" * 33, "metadata"),
    ("metadata nested 900 levels", b'"metadata": ' + b'{"a":' * 900 + b"1" + b"}" * 900, "metadata"),
]


@pytest.mark.parametrize(("member", "field"), [pytest.param(m, f, id=case) for case, m, f in UNSTORABLE])
def test_unstorable_values_are_400_naming_the_field(client: APIClient, member: bytes, field: str) -> None:
    # A repeated member overrides the earlier one (json module semantics), so "name" can be replaced.
    body = b'{"name": "t", "duration": "5m", ' + member + b"}"
    response = client.post("/api/timers", data=body, content_type="application/json")
    _assert_400_naming(response, field)
    assert not Timer.objects.exists()


def test_metadata_nested_32_levels_is_accepted(client: APIClient) -> None:
    nested: Any = 1
    for _ in range(31):
        nested = {"a": nested}
    response = _post(client, {"name": "t", "duration": "5m", "metadata": nested})
    assert response.status_code == 201, response.content


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_json_nested_beyond_the_parsers_recursion_limit_is_400(client: APIClient, opener: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    body = b'{"name": "t", "duration": "5m", "metadata": {"x": ' + opener * 100_000 + b"1" + closer * 100_000 + b"}}"
    response = client.post("/api/timers", data=body, content_type="application/json")
    assert_error(response, 400, contains="nested too deeply")


def test_invalid_utf8_is_400(client: APIClient) -> None:
    response = client.post(
        "/api/timers", data=b'{"name": "\xff\xfe", "duration": "5m"}', content_type="application/json"
    )
    assert_error(response, 400)


def test_nul_in_a_cancel_reason_is_400(client: APIClient) -> None:
    timer = _post(client, {"name": "t", "duration": "5m"}).json()
    response = client.post(
        f"/api/timers/{timer['id']}/cancel", data=b'{"reason": "\\ud800"}', content_type="application/json"
    )
    _assert_400_naming(response, "reason")
    assert Timer.objects.get(pk=timer["id"]).status == "scheduled"


@pytest.mark.parametrize("key", ["a\x00b", "line\nbreak", "caf\u00e9"])
def test_an_idempotency_key_with_control_or_non_ascii_characters_is_400(client: APIClient, key: str) -> None:
    response = client.post("/api/timers", {"name": "t", "duration": "5m"}, format="json", HTTP_IDEMPOTENCY_KEY=key)
    _assert_400_naming(response, "Idempotency-Key")


def test_metadata_size_counts_utf8_bytes_not_escaped_ascii(client: APIClient) -> None:
    # 30,000 "é" are 60,000 bytes of UTF-8 but 180,000 characters once escaped as \u00e9.
    response = _post(client, {"name": "t", "duration": "5m", "metadata": {"text": "\u00e9" * 30_000}})
    assert response.status_code == 201, response.content[:200]
    too_big = _post(client, {"name": "t", "duration": "5m", "metadata": {"text": "\u00e9" * 33_000}})
    _assert_400_naming(too_big, "metadata")


def test_metadata_of_exactly_64_kib_is_accepted_and_one_byte_more_is_not(client: APIClient) -> None:
    overhead = len('{"blob":""}')
    exact = _post(client, {"name": "t", "duration": "5m", "metadata": {"blob": "x" * (64 * 1024 - overhead)}})
    assert exact.status_code == 201, exact.content[:200]
    over = _post(client, {"name": "t", "duration": "5m", "metadata": {"blob": "x" * (64 * 1024 - overhead + 1)}})
    _assert_400_naming(over, "metadata")


# --- numbers JSON cannot carry: 1e309 parses to inf in Python, which Postgres refuses -------

NON_FINITE: list[tuple[str, bytes, str]] = [
    ("1e309 in metadata", b'"metadata": {"limits": {"max": 1e309}}', "metadata"),
    ("-1e309 in metadata", b'"metadata": {"x": [1, -1e309]}', "metadata"),
    ("1e309 in agentBinding", b'"agentBinding": {"agentId": "a1", "score": 1e309}', "agentBinding"),
    ("-1e309 in agentBinding", b'"agentBinding": {"payloadTemplate": {"n": -1e309}}', "agentBinding"),
    ("NaN in metadata", b'"metadata": {"x": NaN}', "metadata"),
    ("Infinity in agentBinding", b'"agentBinding": {"x": Infinity}', "agentBinding"),
    ("-Infinity in metadata", b'"metadata": {"x": -Infinity}', "metadata"),
    (
        "1e309 in action parameters",
        b'"actionBundle": {"actions": [{"id": "a", "kind": "webhook", "parameters": '
        b'{"url": "https://93.184.215.14/hook", "body": {"n": 1e309}}}]}',
        "actionBundle",
    ),
    (
        "-1e309 as a timeoutMs",
        b'"actionBundle": {"actions": [{"id": "a", "kind": "webhook", "parameters": '
        b'{"url": "https://93.184.215.14/hook", "timeoutMs": -1e309}}]}',
        "actionBundle",
    ),
    ("1e309 as the duration", b'"duration": 1e309', "duration"),
    ("NaN as the duration", b'"duration": NaN', "duration"),
]


@pytest.mark.parametrize(("member", "field"), [pytest.param(m, f, id=case) for case, m, f in NON_FINITE])
def test_non_finite_numbers_are_400_naming_the_field(client: APIClient, member: bytes, field: str) -> None:
    body = b'{"name": "t", "duration": "5m", ' + member + b"}"
    response = client.post("/api/timers", data=body, content_type="application/json")
    _assert_400_naming(response, field)
    assert "finite" in response.json()["message"]
    assert not Timer.objects.exists()


def test_non_finite_numbers_in_a_cancel_body_are_400_naming_the_field(client: APIClient) -> None:
    timer = _post(client, {"name": "t", "duration": "5m"}).json()
    response = client.post(
        f"/api/timers/{timer['id']}/cancel", data=b'{"reason": 1e309}', content_type="application/json"
    )
    _assert_400_naming(response, "reason")


def test_large_finite_numbers_in_metadata_are_kept(client: APIClient) -> None:
    body = (
        b'{"name": "t", "duration": "5m", "metadata": {"big": 1.5e308, "small": -1e-400, "int": 12345678901234567890}}'
    )
    response = client.post("/api/timers", data=body, content_type="application/json")
    assert response.status_code == 201, response.content
    assert response.json()["metadata"] == {"big": 1.5e308, "small": -0.0, "int": 12345678901234567890}


# --- the stored action bundle is bounded like metadata ---------------------------------------


def _bundle_of(size: int) -> dict[str, Any]:
    """A webhook bundle whose compact UTF-8 JSON is exactly ``size`` bytes."""
    bundle: dict[str, Any] = {
        "actions": [{"id": "a", "kind": "webhook", "parameters": {"url": "https://93.184.215.14/hook", "body": ""}}]
    }
    overhead = len(json.dumps(bundle, ensure_ascii=False, separators=(",", ":")).encode())
    bundle["actions"][0]["parameters"]["body"] = "x" * (size - overhead)
    return bundle


def test_an_action_bundle_of_exactly_64_kib_is_accepted_and_one_byte_more_is_not(client: APIClient) -> None:
    exact = _post(client, {"name": "t", "duration": "5m", "actionBundle": _bundle_of(64 * 1024)})
    assert exact.status_code == 201, exact.content[:300]
    over = _post(client, {"name": "t", "duration": "5m", "actionBundle": _bundle_of(64 * 1024 + 1)})
    _assert_400_naming(over, "actionBundle")
    assert "64 KiB" in over.json()["message"]
    assert Timer.objects.count() == 1


def test_the_action_bundle_cap_counts_utf8_bytes_and_is_configurable(client: APIClient, settings: Any) -> None:
    settings.MINOOTS_MAX_ACTION_BUNDLE_BYTES = 2000
    bundle = _bundle_of(2000)
    bundle["actions"][0]["parameters"]["body"] = "\u00e9" * (len(bundle["actions"][0]["parameters"]["body"]) // 2)
    assert _post(client, {"name": "t", "duration": "5m", "actionBundle": bundle}).status_code == 201
    over = _post(client, {"name": "t", "duration": "5m", "actionBundle": _bundle_of(2001)})
    _assert_400_naming(over, "actionBundle")
    assert "2000 bytes" in over.json()["message"]


def test_a_file_action_of_1_mib_no_longer_fits_a_bundle(client: APIClient, settings: Any, tmp_path: Any) -> None:
    settings.MINOOTS_FILE_ROOT = str(tmp_path)
    action = {"id": "f", "kind": "file", "parameters": {"path": "a.txt", "content": "x" * (1024 * 1024 - 100)}}
    response = _post(client, {"name": "t", "duration": "5m", "actionBundle": {"actions": [action]}})
    _assert_400_naming(response, "actionBundle")
