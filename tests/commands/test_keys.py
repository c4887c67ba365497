"""``minoots keys create|list|revoke`` (and the ``create_api_key`` alias)."""

from __future__ import annotations

from io import StringIO
from typing import Any

from django.core.management import call_command
from rest_framework.test import APIClient

from tests.commands.conftest import refused, run, run_json
from tests.factories import make_api_key
from timers.models import ApiKey, Tenant


def _works(raw: str) -> int:
    api = APIClient()
    api.credentials(HTTP_X_API_KEY=raw)
    return api.get("/api/timers").status_code


def test_create_makes_the_tenant_and_prints_the_raw_key_alone_on_stdout(db: Any) -> None:
    out, err = run("keys", "create", "initech", "--name", "ci")
    raw = out.strip()
    assert raw.startswith("mk_") and out.strip().splitlines() == [raw]
    assert "Created tenant 'initech'" in err and "shown only now" in err
    assert ApiKey.objects.get().name == "ci"
    assert _works(raw) == 200


def test_create_json_gives_the_key_and_its_fields(db: Any) -> None:
    data = run_json("keys", "create", "initech", "--role", "timer.read")
    assert data["key"].startswith(f"mk_{data['prefix']}_")
    assert data["roles"] == ["timer.read"]
    assert data["tenantCreated"] is True
    assert data["tenantId"] == "initech" and data["revokedAt"] is None


def test_create_refuses_a_tenant_that_is_not_a_slug(db: Any) -> None:
    refused("keys", "create", "no spaces", match="slug")
    refused("keys", "create", "initech", "--role", "timer.delete", match="timer.delete")
    assert not Tenant.objects.exists()


def test_the_old_create_api_key_name_still_works(db: Any) -> None:
    out = StringIO()
    call_command("create_api_key", "initech", stdout=out, stderr=StringIO())
    assert _works(out.getvalue().strip()) == 200


def test_list_shows_active_keys_and_never_a_secret(tenant: Tenant, other_tenant: Tenant) -> None:
    raw = make_api_key(tenant=tenant, name="deploy")
    make_api_key(tenant=other_tenant, name="other")
    out, _ = run("keys", "list")
    assert out.splitlines()[0].split() == ["PREFIX", "TENANT", "NAME", "ROLES", "CREATED", "LAST", "USED", "REVOKED"]
    assert "deploy" in out and "other" in out
    assert raw not in out and raw.split("_")[2] not in out
    only = run_json("keys", "list", "--tenant", "acme")["keys"]
    assert [k["name"] for k in only] == ["deploy"]
    assert set(only[0]) == {"prefix", "tenantId", "name", "roles", "createdAt", "lastUsedAt", "revokedAt"}


def test_list_hides_revoked_keys_unless_all(tenant: Tenant) -> None:
    make_api_key(tenant=tenant, name="old")
    key = ApiKey.objects.get()
    run("keys", "revoke", key.prefix)
    assert run_json("keys", "list")["keys"] == []
    assert [k["name"] for k in run_json("keys", "list", "--all")["keys"]] == ["old"]
    assert run("keys", "list")[1].startswith("No active keys")


def test_list_of_an_unknown_tenant_is_an_error(db: Any) -> None:
    refused("keys", "list", "--tenant", "nobody", match="no tenant 'nobody'")


def test_revoke_by_prefix_or_whole_key_makes_it_a_401(tenant: Tenant) -> None:
    raw = make_api_key(tenant=tenant)
    assert _works(raw) == 200
    out, _ = run("keys", "revoke", raw)
    assert "Revoked API key" in out
    assert _works(raw) == 401
    again = run_json("keys", "revoke", raw.split("_")[1])
    assert again["revokedNow"] is False and again["revokedAt"] is not None


def test_revoke_of_an_unknown_key_is_an_error(db: Any) -> None:
    refused("keys", "revoke", "0123456789ab", match="no API key with prefix '0123456789ab'")
    refused("keys", "revoke", "not-hex!", match="no API key")
