"""The toolkit's client without a server: the requests it makes, its retries and its errors.

httpx's MockTransport answers in place of MINOOTS, so each test says exactly what the server
answered and checks what the client sent. What a live server answers is in test_client_live.py.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from minoots_agent_tools import (
    AuthError,
    ConflictError,
    MinootsClient,
    MinootsError,
    NotFound,
    RateLimited,
    TimerWaitTimeout,
    Unavailable,
    ValidationError,
)
from minoots_agent_tools._http import SSEParser

from tests.integrations.conftest import TOOLKIT_SRC

TIMER = {"id": "t1", "name": "x", "status": "armed", "stateVersion": 2}


def client_with(handler: Callable[[httpx.Request], httpx.Response], **kwargs) -> MinootsClient:
    return MinootsClient(
        base_url="http://minoots.test/api/",
        api_key="mk_test",
        tenant_id="acme",
        sync_client=httpx.Client(transport=httpx.MockTransport(handler)),
        **kwargs,
    )


def recorder(*responses: httpx.Response | Exception) -> tuple[list[httpx.Request], Callable]:
    sent: list[httpx.Request] = []
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return sent, handler


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retries wait for real in production; here the waits are recorded instead."""
    slept: list[float] = []
    monkeypatch.setattr("minoots_agent_tools.client.time.sleep", slept.append)
    return slept


def test_a_create_sends_the_original_clients_body_and_headers() -> None:
    sent, handler = recorder(httpx.Response(201, json=TIMER))
    client = client_with(handler)

    client.schedule_timer(
        name="deploy",
        requested_by="slack:command",
        duration="5m",
        metadata={"slack_note": "note here"},
        region="us-east",
        ecosystem={"parserator": {"datasetId": "contacts-v3"}},
    )

    (request,) = sent
    assert request.method == "POST" and str(request.url) == "http://minoots.test/api/timers"
    assert json.loads(request.content) == {
        "tenantId": "acme",
        "requestedBy": "slack:command",
        "name": "deploy",
        "duration": "5m",
        "metadata": {"slack_note": "note here"},
        "labels": {"minoots.io/region": "us-east"},
        "ecosystem": {"parserator": {"datasetId": "contacts-v3"}},
    }
    assert request.headers["x-api-key"] == "mk_test"
    assert request.headers["accept"] == "application/json"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-minoots-region"] == "us-east"
    assert len(request.headers["idempotency-key"]) == 36  # a UUID


def test_the_default_region_and_requester_fill_what_the_call_leaves_out() -> None:
    sent, handler = recorder(httpx.Response(201, json=TIMER))
    client = client_with(handler, default_region="eu-west")

    client.schedule_timer(
        name="x", fire_at=datetime(2030, 1, 1, 14, tzinfo=UTC), action_bundle={"actions": []}, agent_binding={}
    )

    body = json.loads(sent[0].content)
    assert body["requestedBy"] == "agent:minoots"
    assert body["fireAt"] == "2030-01-01T14:00:00+00:00"
    assert body["labels"] == {"minoots.io/region": "eu-west"}
    assert body["actionBundle"] == {"actions": []} and body["agentBinding"] == {}
    assert sent[0].headers["x-minoots-region"] == "eu-west"


def test_durations_may_be_milliseconds_or_timedeltas_and_exactly_one_of_duration_or_fire_at() -> None:
    sent, handler = recorder(httpx.Response(201, json=TIMER))
    client = client_with(handler)
    client.schedule_timer(name="x", duration=timedelta(minutes=1, milliseconds=5))
    client.schedule_timer(name="x", duration=1500)
    assert [json.loads(r.content)["duration"] for r in sent] == [60005, 1500]
    with pytest.raises(ValueError, match="exactly one"):
        client.schedule_timer(name="x")
    with pytest.raises(ValueError, match="exactly one"):
        client.schedule_timer(name="x", duration="1m", fire_at="2030-01-01T00:00:00Z")
    with pytest.raises(ValueError, match="aware"):
        client.schedule_timer(name="x", fire_at=datetime(2030, 1, 1))


def test_a_create_retried_after_a_lost_answer_sends_the_same_idempotency_key_and_body(_no_sleep) -> None:
    sent, handler = recorder(
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadTimeout("timed out"),
        httpx.Response(200, json=TIMER),
    )
    timer = client_with(handler).schedule_timer(name="x", duration="1m")

    assert timer == TIMER
    assert len(sent) == 3
    assert len({r.headers["idempotency-key"] for r in sent}) == 1
    assert len({r.content for r in sent}) == 1
    assert len(_no_sleep) == 2 and all(0 <= s <= 8 for s in _no_sleep)


def test_each_create_gets_its_own_idempotency_key_unless_one_is_given() -> None:
    sent, handler = recorder(httpx.Response(201, json=TIMER))
    client = client_with(handler)
    client.schedule_timer(name="x", duration="1m")
    client.schedule_timer(name="x", duration="1m")
    client.schedule_timer(name="x", duration="1m", idempotency_key="deploy-42-check")
    keys = [r.headers["idempotency-key"] for r in sent]
    assert keys[0] != keys[1] and keys[2] == "deploy-42-check"


def test_429_and_503_are_retried_honouring_retry_after(_no_sleep) -> None:
    sent, handler = recorder(
        httpx.Response(429, headers={"Retry-After": "2"}, json={"message": "slow down", "details": None}),
        httpx.Response(503, headers={"Retry-After": "1"}, json={"message": "Database unavailable", "details": None}),
        httpx.Response(201, json=TIMER),
    )
    assert client_with(handler).schedule_timer(name="x", duration="1m") == TIMER
    assert len(sent) == 3
    assert 2 <= _no_sleep[0] <= 2.3 and 1 <= _no_sleep[1] <= 1.2


def test_a_quota_429_without_retry_after_is_not_retried_and_says_its_limit() -> None:
    body = {"message": "Tenant acme has 5 active timers", "details": None, "limitType": "burst"}
    sent, handler = recorder(httpx.Response(429, json=body))
    with pytest.raises(RateLimited) as caught:
        client_with(handler).schedule_timer(name="x", duration="1m")
    assert len(sent) == 1
    assert caught.value.status == 429 and caught.value.limit_type == "burst"
    assert caught.value.message == "Tenant acme has 5 active timers"


def test_retries_are_bounded_and_end_in_unavailable(_no_sleep) -> None:
    sent, handler = recorder(httpx.Response(503, json={"message": "Database unavailable", "details": None}))
    with pytest.raises(Unavailable) as caught:
        client_with(handler, max_retries=2).get_timer("t1")
    assert len(sent) == 3 and caught.value.status == 503

    sent, handler = recorder(httpx.ConnectError("refused"))
    with pytest.raises(Unavailable) as unreachable:
        client_with(handler, max_retries=2).get_timer("t1")
    assert len(sent) == 3 and unreachable.value.status is None


def test_a_reschedule_is_sent_again_only_when_it_surely_was_not_sent() -> None:
    sent, handler = recorder(httpx.ConnectError("refused"), httpx.Response(200, json=TIMER))
    client_with(handler).reschedule_timer("t1", duration="10m", if_match=2)
    assert len(sent) == 2 and sent[0].headers["if-match"] == '"2"'
    assert sent[0].method == "PATCH" and json.loads(sent[0].content)["duration"] == "10m"

    sent, handler = recorder(httpx.ReadTimeout("timed out"), httpx.Response(200, json=TIMER))
    with pytest.raises(Unavailable):
        client_with(handler).reschedule_timer("t1", duration="10m")
    assert len(sent) == 1


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, ValidationError),
        (401, AuthError),
        (403, AuthError),
        (404, NotFound),
        (409, ConflictError),
        (413, ValidationError),
        (500, MinootsError),
    ],
)
def test_errors_are_typed_by_status_with_the_apis_message_and_details(status, error) -> None:
    body = {"message": "duration: must be positive", "details": {"duration": ["must be positive"]}}
    _, handler = recorder(httpx.Response(status, json=body))
    with pytest.raises(error) as caught:
        client_with(handler).get_timer("t1")
    assert type(caught.value) is error
    assert caught.value.status == status
    assert caught.value.message == "duration: must be positive"
    assert caught.value.details == {"duration": ["must be positive"]}


def test_an_error_without_a_json_body_still_has_a_message() -> None:
    _, handler = recorder(httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(MinootsError) as caught:
        client_with(handler).get_timer("t1")
    assert caught.value.status == 502 and caught.value.message == "Bad Gateway"


def test_list_timers_follows_next_by_its_cursor_with_the_filters() -> None:
    pages = {
        None: {"timers": [{"id": "a"}, {"id": "b"}], "next": "http://elsewhere:9/api/timers?cursor=c2&limit=2"},
        "c2": {"timers": [{"id": "c"}], "next": None},
    }
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    timers = list(
        client_with(handler).list_timers(
            status=["armed", "scheduled"],
            labels={"team": "ops", "env": "prod"},
            fire_after="2030-01-01T00:00:00Z",
            limit=2,
        )
    )

    assert [t["id"] for t in timers] == ["a", "b", "c"]
    assert all(r.url.host == "minoots.test" for r in sent)  # the base URL, not the server's idea of it
    first = sent[0].url.params
    assert first.get("status") == "armed,scheduled" and first.get_list("label") == ["team:ops", "env:prod"]
    assert first.get("fireAfter") == "2030-01-01T00:00:00Z" and first.get("limit") == "2"
    assert first.get("tenantId") == "acme"
    assert sent[1].url.params.get("cursor") == "c2" and sent[1].url.params.get_list("label") == ["team:ops", "env:prod"]


def test_wait_for_timer_polls_when_the_stream_is_refused() -> None:
    states = iter(["armed", "fired", "settled"])
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path.endswith("/stream"):
            return httpx.Response(429, json={"message": "too many streams", "details": None, "limitType": "streams"})
        return httpx.Response(200, json={**TIMER, "status": next(states)})

    timer = client_with(handler, max_retries=0).wait_for_timer("t1", poll_interval=0.01)
    assert timer["status"] == "settled"
    assert paths == ["/api/timers/stream", "/api/timers/t1", "/api/timers/t1", "/api/timers/t1"]


def test_wait_for_timer_gives_up_with_a_timeout_error_carrying_the_last_state(monkeypatch) -> None:
    _, handler = recorder(httpx.Response(200, json=TIMER))
    with pytest.raises(TimeoutError) as caught:
        client_with(handler).wait_for_timer("t1", timeout=0, use_stream=False)
    assert isinstance(caught.value, TimerWaitTimeout) and isinstance(caught.value, MinootsError)
    assert caught.value.timer == TIMER and "still armed" in str(caught.value)


def test_the_event_stream_parser_reads_ids_kinds_multiline_data_and_skips_comments() -> None:
    parser = SSEParser()
    lines = [
        "retry: 1000",
        ": connected",
        "",
        "id: 41",
        "event: armed",
        'data: {"timerId": "t1",',
        'data:  "kind": "armed"}',
        "",
        ": keepalive",
        "",
        "id: 42",
        "event: settled",
        'data: {"eventType": "timer.settled", "event": {"type": "settled", "timer": {"id": "t2"}}}',
        "",
    ]
    events = list(parser.feed(lines))
    assert parser.retry_ms == 1000
    assert [(e.id, e.event, e.timer_id, e.kind) for e in events] == [
        (41, "armed", "t1", "armed"),
        (42, "settled", "t2", "settled"),
    ]


def test_from_env_reads_the_three_variables_and_the_optional_region(monkeypatch) -> None:
    monkeypatch.setenv("MINOOTS_API_URL", "http://minoots.test/api")
    monkeypatch.setenv("MINOOTS_API_KEY", "mk_env")
    monkeypatch.setenv("MINOOTS_TENANT_ID", "acme")
    monkeypatch.setenv("MINOOTS_REGION", "us-east")
    client = MinootsClient.from_env(timeout=3.0)
    assert (client.base_url, client.api_key, client.tenant_id, client.default_region, client.timeout) == (
        "http://minoots.test/api",
        "mk_env",
        "acme",
        "us-east",
        3.0,
    )
    monkeypatch.delenv("MINOOTS_API_KEY")
    monkeypatch.delenv("MINOOTS_TENANT_ID")
    with pytest.raises(ValueError, match="MINOOTS_API_KEY, MINOOTS_TENANT_ID"):
        MinootsClient.from_env()


def test_the_toolkit_imports_nothing_of_the_server() -> None:
    forbidden = {"django", "rest_framework", "celery", "timers", "actions", "minoots_project", "integrations", "tests"}
    for path in (TOOLKIT_SRC / "minoots_agent_tools").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
    assert (TOOLKIT_SRC / "minoots_agent_tools" / "py.typed").exists()


class FakeBatchServer:
    """``POST /api/timers/batch`` as MINOOTS answers it: per-timer results, a key stored once."""

    def __init__(self) -> None:
        self.sent: list[httpx.Request] = []
        self.stored: dict[str, dict] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        results = []
        for index, body in enumerate(json.loads(request.content)["timers"]):
            key = body["idempotencyKey"]
            if body.get("duration") == "soon":
                error = {"message": "duration: 'soon' is not a duration", "details": {"duration": ["not a duration"]}}
                results.append({"index": index, "status": 400, "error": error})
            elif key in self.stored:
                results.append({"index": index, "status": 200, "timer": self.stored[key]})
            else:
                self.stored[key] = {
                    "id": f"t{len(self.stored)}",
                    "name": body.get("name"),
                    "labels": body.get("labels"),
                }
                results.append({"index": index, "status": 201, "timer": self.stored[key]})
        return httpx.Response(200, json={"results": results})

    def bodies(self) -> list[list[dict]]:
        return [json.loads(r.content)["timers"] for r in self.sent]


def test_schedule_timers_sends_chunks_of_at_most_a_thousand_and_answers_in_input_order() -> None:
    server = FakeBatchServer()
    timers = [{"name": f"n{i}", "duration": "5m"} for i in range(2500)]
    timers[7] = {"name": "n7", "duration": "5m", "region": "us-east", "idempotency_key": "deploy-7"}

    results = client_with(server, default_region="eu-west").schedule_timers(timers)

    assert [str(r.url) for r in server.sent] == ["http://minoots.test/api/timers/batch"] * 3
    assert [len(chunk) for chunk in server.bodies()] == [1000, 1000, 500]
    assert [r.index for r in results] == list(range(2500))
    assert [r.timer["name"] for r in results if r.timer] == [f"n{i}" for i in range(2500)]
    assert all(r.ok and r.created and r.status == 201 and r.error is None for r in results)
    sent = [body for chunk in server.bodies() for body in chunk]
    assert sent[0] == {
        "tenantId": "acme",
        "requestedBy": "agent:minoots",
        "name": "n0",
        "duration": "5m",
        "metadata": {},
        "labels": {"minoots.io/region": "eu-west"},
        "idempotencyKey": sent[0]["idempotencyKey"],
    }
    assert sent[7]["labels"] == {"minoots.io/region": "us-east"} and sent[7]["idempotencyKey"] == "deploy-7"
    assert len({body["idempotencyKey"] for body in sent}) == 2500  # a new UUID for each timer without one


def test_an_invalid_timer_comes_back_as_its_own_typed_error_and_the_others_are_created() -> None:
    limit = {"message": "Tenant 'acme' created 5 timers today (UTC), its daily limit", "details": None}
    answer = {
        "results": [
            {"index": 0, "status": 201, "timer": TIMER},
            {
                "index": 1,
                "status": 400,
                "error": {"message": "duration: must be positive", "details": {"duration": ["must be positive"]}},
            },
            {
                "index": 2,
                "status": 409,
                "error": {"message": "Idempotency-Key was already used", "details": {"timerId": "t9"}},
            },
            {"index": 3, "status": 429, "error": {**limit, "limitType": "daily"}},
            {"index": 4, "status": 200, "timer": TIMER},
        ]
    }
    _, handler = recorder(httpx.Response(200, json=answer))
    timers = [{"name": "x", "duration": d} for d in ("1m", "-1m", "1m", "1m", "1m")]

    ok, invalid, conflict, over, replayed = client_with(handler).schedule_timers(timers)

    assert ok.created and ok.timer == TIMER
    assert replayed.ok and not replayed.created and replayed.status == 200 and replayed.timer == TIMER
    assert not invalid.ok and invalid.timer is None and type(invalid.error) is ValidationError
    assert (invalid.status, invalid.error.status, invalid.error.message, invalid.error.details) == (
        400,
        400,
        "duration: must be positive",
        {"duration": ["must be positive"]},
    )
    assert type(conflict.error) is ConflictError and conflict.error.details == {"timerId": "t9"}
    assert type(over.error) is RateLimited and over.error.limit_type == "daily" and over.error.status == 429


def test_a_chunk_whose_answer_is_lost_is_sent_again_with_the_same_keys_and_creates_nothing_twice(_no_sleep) -> None:
    server = FakeBatchServer()
    lost = {"count": 0}

    def lossy(request: httpx.Request) -> httpx.Response:
        answer = server(request)
        if lost["count"] == 0:  # stored, but the answer never arrives
            lost["count"] += 1
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return answer

    results = client_with(lossy).schedule_timers([{"name": f"n{i}", "duration": "5m"} for i in range(3)])

    assert len(server.sent) == 2 and server.sent[0].content == server.sent[1].content
    assert len(server.stored) == 3
    assert [r.status for r in results] == [200, 200, 200]  # the first try's timers, replayed
    assert [r.timer["id"] for r in results if r.timer] == ["t0", "t1", "t2"]


def test_the_same_call_again_with_idempotency_keys_creates_nothing_again() -> None:
    server = FakeBatchServer()
    client = client_with(server)
    timers = [{"name": f"n{i}", "duration": "5m", "idempotency_key": f"run-1-{i}"} for i in range(5)]
    timers.append({"name": "bad", "duration": "soon", "idempotency_key": "run-1-bad"})

    first = client.schedule_timers(timers, chunk_size=2)
    again = client.schedule_timers(timers, chunk_size=2)

    assert [r.status for r in first] == [201] * 5 + [400]
    assert [r.status for r in again] == [200] * 5 + [400]
    assert [r.timer for r in again] == [r.timer for r in first]
    assert len(server.stored) == 5 and len(server.sent) == 6


def test_a_failure_of_a_whole_batch_request_raises_the_typed_error(_no_sleep) -> None:
    sent, handler = recorder(httpx.Response(401, json={"message": "Invalid API key", "details": None}))
    with pytest.raises(AuthError) as denied:
        client_with(handler).schedule_timers([{"name": "x", "duration": "1m"}])
    assert denied.value.status == 401 and len(sent) == 1

    sent, handler = recorder(httpx.Response(503, json={"message": "Database unavailable", "details": None}))
    with pytest.raises(Unavailable) as down:
        client_with(handler, max_retries=2).schedule_timers([{"name": "x", "duration": "1m"}])
    assert down.value.status == 503 and len(sent) == 3 and len({r.content for r in sent}) == 1

    server = FakeBatchServer()
    sent, handler = recorder(
        httpx.Response(429, headers={"Retry-After": "2"}, json={"message": "slow down", "details": None}),
        httpx.Response(200, json={"results": [{"index": 0, "status": 201, "timer": TIMER}]}),
    )
    assert [r.status for r in client_with(handler).schedule_timers([{"name": "x", "duration": "1m"}])] == [201]
    assert len(sent) == 2 and 2 <= _no_sleep[-1] <= 2.3

    answers = iter([None, httpx.Response(413, json={"message": "Request body too large", "details": None})])

    def second_chunk_refused(request: httpx.Request) -> httpx.Response:
        answer = next(answers)
        return server(request) if answer is None else answer

    with pytest.raises(ValidationError) as too_large:
        client_with(second_chunk_refused).schedule_timers([{"name": "x", "duration": "1m"}] * 3, chunk_size=2)
    assert too_large.value.status == 413 and len(server.stored) == 2  # the first chunk is stored


def test_a_timer_refused_locally_raises_before_anything_is_sent() -> None:
    server = FakeBatchServer()
    client = client_with(server)
    fine = {"name": "x", "duration": "1m"}
    with pytest.raises(ValueError, match=r"timers\[1\]: give exactly one of duration or fire_at"):
        client.schedule_timers([fine, {"name": "y", "duration": "1m", "fire_at": "2030-01-01T00:00:00Z"}])
    with pytest.raises(ValueError, match=r"timers\[2\]: fire_at must be an aware datetime"):
        client.schedule_timers([fine, fine, {"fire_at": datetime(2030, 1, 1)}])
    with pytest.raises(TypeError, match=r"timers\[0\]: unknown argument\(s\) when"):
        client.schedule_timers([{"name": "x", "when": "1m"}])
    with pytest.raises(ValueError, match="chunk_size must be from 1 to 1000"):
        client.schedule_timers([fine], chunk_size=1001)
    assert server.sent == []
    assert client.schedule_timers([]) == [] and server.sent == []


def test_a_batch_answer_that_does_not_match_the_timers_sent_is_an_error() -> None:
    _, handler = recorder(httpx.Response(200, json={"results": [{"index": 0, "status": 201, "timer": TIMER}]}))
    with pytest.raises(MinootsError, match="1 results for 2 timers"):
        client_with(handler).schedule_timers([{"name": "x", "duration": "1m"}] * 2)


def test_schedule_timers_async_does_the_same() -> None:
    import asyncio

    server = FakeBatchServer()
    client = MinootsClient(
        base_url="http://minoots.test/api",
        api_key="mk_test",
        tenant_id="acme",
        async_client=httpx.AsyncClient(transport=httpx.MockTransport(server)),
    )
    timers = [{"name": f"n{i}", "duration": "5m", "region": "ap-south"} for i in range(5)]
    timers[3] = {"name": "n3", "duration": "soon"}

    results = asyncio.run(client.schedule_timers_async(timers, chunk_size=2))

    assert [len(chunk) for chunk in server.bodies()] == [2, 2, 1]
    assert [r.status for r in results] == [201, 201, 201, 400, 201] and [r.index for r in results] == list(range(5))
    assert type(results[3].error) is ValidationError and results[3].error.message.startswith("duration:")
    assert results[4].timer is not None and results[4].timer["labels"] == {"minoots.io/region": "ap-south"}
