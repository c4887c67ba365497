"""``manage.py create_api_key <tenant> [--name] [--role ...]``."""

from __future__ import annotations

import hashlib
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from timers.models import ApiKey, Tenant


def _run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("create_api_key", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def _raw_key(stdout: str) -> str:
    return stdout.rstrip("\n").splitlines()[-1]


def test_command_creates_the_tenant_and_prints_the_raw_key_alone_on_the_last_line(db: Any) -> None:
    stdout, stderr = _run("initech", "--name", "ci")
    raw = _raw_key(stdout)
    assert raw.startswith("mk_")
    assert raw.strip() == raw and " " not in raw
    assert Tenant.objects.filter(pk="initech").exists()
    key = ApiKey.objects.get(tenant_id="initech")
    assert key.name == "ci"
    assert raw.split("_")[1] == key.prefix
    assert "Created tenant 'initech'" in stderr


def test_only_the_hash_of_the_printed_key_is_stored(db: Any) -> None:
    raw = _raw_key(_run("initech")[0])
    key = ApiKey.objects.get()
    assert key.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    stored = ApiKey.objects.filter(pk=key.pk).values().get()
    assert all(raw not in str(value) for value in stored.values())


def test_the_printed_key_works_against_the_api(db: Any) -> None:
    raw = _raw_key(_run("initech")[0])
    api = APIClient()
    api.credentials(HTTP_X_API_KEY=raw)
    created = api.post("/api/timers", {"name": "from-cli", "duration": "5m"}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["tenantId"] == "initech"
    assert api.get(f"/api/timers/{created.json()['id']}").status_code == 200


def test_default_roles_are_read_write_and_cancel(db: Any) -> None:
    _run("initech")
    assert sorted(ApiKey.objects.get().roles) == ["timer.cancel", "timer.read", "timer.write"]


def test_role_option_is_repeatable_and_limits_the_key(db: Any) -> None:
    raw = _raw_key(_run("initech", "--role", "timer.read", "--role", "timer.cancel")[0])
    assert sorted(ApiKey.objects.get().roles) == ["timer.cancel", "timer.read"]
    api = APIClient()
    api.credentials(HTTP_X_API_KEY=raw)
    assert api.get("/api/timers").status_code == 200
    assert api.post("/api/timers", {"name": "x", "duration": "5m"}, format="json").status_code == 403


def test_an_existing_tenant_is_reused(tenant: Tenant) -> None:
    stdout, stderr = _run("acme")
    assert Tenant.objects.count() == 1
    assert ApiKey.objects.get().tenant_id == "acme"
    assert "Created tenant" not in stderr


def test_every_run_prints_a_new_key(db: Any) -> None:
    first = _raw_key(_run("initech")[0])
    second = _raw_key(_run("initech")[0])
    assert first != second
    assert ApiKey.objects.count() == 2


def test_nothing_but_the_key_goes_to_stdout(db: Any) -> None:
    stdout, _ = _run("initech")
    assert stdout.strip().splitlines() == [_raw_key(stdout)]


def test_an_unknown_role_is_refused(db: Any) -> None:
    with pytest.raises(CommandError, match="timer.delete"):
        _run("initech", "--role", "timer.delete")
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("bad", ["has space", "slash/tenant", "ünïcode", ""])
def test_a_tenant_that_is_not_a_slug_is_refused(db: Any, bad: str) -> None:
    with pytest.raises(CommandError, match="slug"):
        _run(bad)
    assert not Tenant.objects.exists()


def test_a_tenant_id_longer_than_the_column_is_refused(db: Any) -> None:
    with pytest.raises(CommandError, match="at most 64 characters"):
        _run("t" * 65)
    assert not Tenant.objects.exists()


def test_a_key_name_longer_than_the_column_is_refused(db: Any) -> None:
    with pytest.raises(CommandError, match="--name"):
        _run("initech", "--name", "n" * 101)
    assert not ApiKey.objects.exists()
