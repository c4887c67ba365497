"""Assertions on the documented API contract, shared by the API tests."""

from __future__ import annotations

from typing import Any

ERROR_KEYS = {"message", "details"}


def assert_error(
    response: Any, status: int, *, field: str | None = None, contains: str | None = None
) -> dict[str, Any]:
    """Assert that ``response`` is an error in the one documented shape; return its body.

    The contract (README, "Every error under /api/ has one shape"): the ``status`` code, a JSON
    body of exactly ``{"message": ..., "details": ...}`` (a 429 adds ``limitType``), and a
    non-empty message that starts with the offending field (``"duration: must be positive"``).
    ``field``: the message starts with ``"<field>:"``. ``contains``: the message contains it.
    Works with Django test responses and ``requests`` responses alike.
    """
    assert response.status_code == status, (response.status_code, response.content[:1000])
    content_type = response.headers.get("Content-Type", "")
    assert content_type.startswith("application/json"), content_type
    body = response.json()
    assert isinstance(body, dict), body
    expected = (ERROR_KEYS | {"limitType"}) if status == 429 else ERROR_KEYS
    assert set(body) == expected, body
    message = body["message"]
    assert isinstance(message, str) and message, body
    if field is not None:
        assert message.startswith(f"{field}:"), message
    if contains is not None:
        assert contains in message, message
    return body
