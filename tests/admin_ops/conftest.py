"""Fixtures for the admin tests: a logged-in superuser, and a staff member who may only look."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from minoots_project import admin_site


@pytest.fixture
def admin_browser(db: Any) -> Client:
    user = get_user_model().objects.create_user("root", is_staff=True, is_superuser=True)
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def viewer_browser(db: Any) -> Client:
    """Staff with the view permissions only: sees the pages, may not act."""
    user = get_user_model().objects.create_user("viewer", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def no_worker_ping(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The dashboard's worker ping answers at once with these workers (no 1 s broadcast)."""
    workers = ["firing@test", "worker@test"]
    monkeypatch.setattr(admin_site, "_workers_answering", lambda: workers)
    return workers


def post_action(browser: Client, url: str, action: str, ids: list[Any], **extra: Any) -> Any:
    """POST an admin action on ``ids`` from the changelist at ``url``; follow the redirect."""
    data = {"action": action, "_selected_action": [str(i) for i in ids], "index": "0", **extra}
    return browser.post(url, data, follow=True)


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []
