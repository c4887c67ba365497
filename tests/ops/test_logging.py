"""Log lines: JSON when asked, trace ids from the request into tasks, never a secret."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
from django.test import Client

from minoots_project import tracing
from minoots_project.logconfig import ContextFilter, JsonFormatter, RedactSecretsFilter, TextFormatter, redact
from minoots_project.runall import Output

KEY = "mk_0123456789ab_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"


def _logger(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactSecretsFilter())
    logger = logging.getLogger(f"tests.ops.{id(stream)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


@pytest.mark.parametrize(
    "text",
    [
        f"key {KEY} here",
        f"secret={SECRET}",
        f"Authorization: Bearer {JWT}",
        "{'Authorization': 'Bearer opaque-token-123'}",
        "{'X-API-Key': 'opaque-key-123'}",
        '{"x-api-key": "opaque-key-123"}',
        "HTTP_AUTHORIZATION=Basic dXNlcjpwYXNz",
        json.dumps({"message": 'headers {"Authorization": "Bearer opaque-token-123"}'}),
    ],
)
def test_redact_removes_every_kind_of_secret(text: str) -> None:
    cleaned = redact(text)
    for secret in (KEY, SECRET, JWT, "opaque-token-123", "opaque-key-123", "dXNlcjpwYXNz"):
        assert secret not in cleaned
    assert "[REDACTED]" in cleaned


def test_redact_keeps_the_key_prefix_an_operator_looks_up() -> None:
    assert redact(KEY) == "mk_0123456789ab_[REDACTED]"


def test_json_lines_carry_the_structured_fields_and_no_secret() -> None:
    logger, stream = _logger(JsonFormatter())
    token = tracing.set_trace_id("trace-42")
    try:
        logger.info("created with %s", KEY, extra={"timer_id": "t-1", "tenant": "acme", "event": "created"})
        try:
            raise RuntimeError(f"boom {SECRET}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        tracing.reset_trace_id(token)

    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "created with mk_0123456789ab_[REDACTED]"
    assert (first["timer_id"], first["tenant"], first["event"], first["trace_id"]) == (
        "t-1",
        "acme",
        "created",
        "trace-42",
    )
    assert first["level"] == "INFO" and first["time"].endswith("+00:00")
    assert second["timer_id"] is None and "RuntimeError" in second["exc_info"]
    assert SECRET not in stream.getvalue() and KEY not in stream.getvalue()


def test_text_lines_are_readable_and_redacted() -> None:
    logger, stream = _logger(TextFormatter())
    logger.info("headers %s", {"Authorization": f"Bearer {JWT}"})
    line = stream.getvalue()
    assert " INFO " in line and JWT not in line and "[REDACTED]" in line


@pytest.mark.django_db
def test_a_request_trace_id_is_echoed_and_a_bad_one_replaced() -> None:
    good = Client().get("/healthz", HTTP_X_TRACE_ID="abc-123")
    assert good["x-trace-id"] == "abc-123"
    bad = Client().get("/healthz", HTTP_X_TRACE_ID="<script>" + "x" * 200)
    assert bad["x-trace-id"] != "<script>" and len(bad["x-trace-id"]) == 32


def test_publishing_a_task_carries_the_trace_id_in_its_headers() -> None:
    headers: dict[str, Any] = {}
    token = tracing.set_trace_id("trace-7")
    try:
        tracing._inject_trace_id(headers=headers)
    finally:
        tracing.reset_trace_id(token)
    assert headers == {"trace_id": "trace-7"}

    class Task:
        class request:  # noqa: N801 - mimics celery's Task.request
            trace_id = "trace-7"

    tracing._restore_trace_id(task_id="t1", task=Task())
    assert tracing.current_trace_id() == "trace-7"
    tracing._clear_trace_id(task_id="t1")
    assert tracing.current_trace_id() is None


def test_runall_output_marks_each_line_with_its_process() -> None:
    text = Output(json_mode=False, stream=io.StringIO())
    assert text.format("web", "hello\n") == "web    | hello"
    as_json = Output(json_mode=True, stream=io.StringIO())
    assert json.loads(as_json.format("worker", '{"message": "x", "level": "INFO"}')) == {
        "service": "worker",
        "message": "x",
        "level": "INFO",
    }
    assert json.loads(as_json.format("beat", f"banner {KEY}")) == {
        "service": "beat",
        "message": "banner mk_0123456789ab_[REDACTED]",
    }
