"""Fixtures for the action tests: a receiver, settings that enable each kind, fired timers."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.actions.support import Receiver, make_tls_files
from tests.factories import make_timer
from timers import services
from timers.models import Tenant, Timer


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def tls_receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """An HTTPS receiver whose certificate names secure.example.com, signed by a CA the
    webhook runner is told to trust."""
    from actions.runners import webhook

    ca, cert, key = make_tls_files(tmp_path, "secure.example.com")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    monkeypatch.setattr(webhook, "CA_BUNDLE", str(ca))
    r = Receiver(ssl_context=context)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def allow_private(settings: Any) -> None:
    """The local receiver is on loopback: allow private targets for the test."""
    settings.MINOOTS_WEBHOOK_ALLOW_PRIVATE = True


@pytest.fixture
def file_root(settings: Any, tmp_path: Path) -> Path:
    root = tmp_path / "files"
    root.mkdir()
    settings.MINOOTS_FILE_ROOT = str(root)
    return root


FireTimer = Callable[..., Timer]


@pytest.fixture
def fire_timer(tenant: Tenant) -> FireTimer:
    """Store an armed, due timer with ``actions`` and claim it, as the fire step does."""

    def fire(*actions: dict[str, Any], concurrency: int = 1, retry: dict[str, Any] | None = None) -> Timer:
        policy = {"maxAttempts": 3, "backoffInitialMs": 10, "backoffMultiplier": 2, **(retry or {})}
        timer = make_timer(tenant=tenant, actions=actions, concurrency=concurrency, retry_policy=policy)
        claimed = services.timers_fire(limit=100)
        assert timer.pk in [c.id for c in claimed]
        timer.refresh_from_db()
        return timer

    return fire
