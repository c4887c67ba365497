"""``minoots keys create|list|revoke``: API keys of a tenant; the raw key is shown once."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.core.validators import validate_slug

from timers import keys, selectors
from timers.management.cli.output import Verb, table, utc, write_json
from timers.models import ApiKey, Role, Tenant


def tenant_id_checked(tenant_id: str) -> str:
    """``tenant_id`` if it can be a tenant's id (a slug within the column), else a CommandError."""
    try:
        validate_slug(tenant_id)
    except ValidationError as exc:
        raise CommandError(f"tenant must be a slug (letters, digits, '-' or '_'): {tenant_id!r}") from exc
    max_tenant = Tenant._meta.get_field("id").max_length or 64
    if len(tenant_id) > max_tenant:
        raise CommandError(f"tenant must be at most {max_tenant} characters: {tenant_id!r}")
    return tenant_id


def tenant_existing(tenant_id: str) -> Tenant:
    tenant = selectors.tenant_get(tenant_id=tenant_id)
    if tenant is None:
        raise CommandError(f"no tenant '{tenant_id}' (create it with: manage.py minoots keys create {tenant_id})")
    return tenant


def key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "prefix": key.prefix,
        "tenantId": key.tenant_id,
        "name": key.name,
        "roles": list(key.roles),
        "createdAt": utc(key.created_at),
        "lastUsedAt": utc(key.last_used_at) if key.last_used_at else None,
        "revokedAt": utc(key.revoked_at) if key.revoked_at else None,
    }


def create(verb: Verb, opts: dict[str, Any]) -> None:
    tenant_id, name = tenant_id_checked(opts["tenant"]), opts["name"]
    max_name = ApiKey._meta.get_field("name").max_length or 100
    if len(name) > max_name:
        raise CommandError(f"--name must be at most {max_name} characters")
    tenant, created = keys.tenant_get_or_create(tenant_id=tenant_id)
    try:
        key, raw = keys.api_key_create(tenant=tenant, name=name, roles=opts["roles"])
    except ValueError as exc:  # an unknown role (argparse's choices catch it first from a shell)
        raise CommandError(str(exc)) from exc
    if opts["json"]:
        write_json(verb, {**key_json(key), "key": raw, "tenantCreated": created})
        return
    if created:
        verb.stderr.write(f"Created tenant '{tenant.id}'.")
    verb.stderr.write(
        f"API key {key.prefix} for tenant '{tenant.id}' with roles {', '.join(key.roles)}; it is shown only now:"
    )
    verb.stdout.write(raw)


def list_(verb: Verb, opts: dict[str, Any]) -> None:
    tenant = tenant_existing(opts["tenant"]) if opts["tenant"] else None
    found = list(selectors.api_keys_list(tenant=tenant, include_revoked=opts["all"]))
    if opts["json"]:
        write_json(verb, {"keys": [key_json(k) for k in found]})
        return
    if not found:
        verb.stderr.write("No keys." if opts["all"] else "No active keys (--all lists revoked ones too).")
        return
    rows = [
        (
            k.prefix,
            k.tenant_id,
            k.name or "-",
            ",".join(k.roles),
            utc(k.created_at),
            utc(k.last_used_at),
            utc(k.revoked_at),
        )
        for k in found
    ]
    verb.stdout.write(table(rows, ["PREFIX", "TENANT", "NAME", "ROLES", "CREATED", "LAST USED", "REVOKED"]))


def _prefix(given: str) -> str:
    """A key's prefix from itself or from a whole raw key (``mk_<prefix>_<secret>``)."""
    if given.startswith(keys.KEY_PREFIX):
        parts = given.split("_", 2)
        return parts[1] if len(parts) == 3 else ""
    return given


def revoke(verb: Verb, opts: dict[str, Any]) -> None:
    prefix = _prefix(opts["key"])
    key = selectors.api_key_get(prefix=prefix)
    if key is None:
        raise CommandError(f"no API key with prefix '{prefix[:40]}' (see: manage.py minoots keys list --all)")
    revoked = keys.api_key_revoke(key=key)
    if opts["json"]:
        write_json(verb, {**key_json(key), "revokedNow": revoked})
        return
    if revoked:
        verb.stdout.write(f"Revoked API key {key.prefix} of tenant '{key.tenant_id}'; requests with it now get 401.")
    else:
        verb.stdout.write(
            f"API key {key.prefix} of tenant '{key.tenant_id}' was already revoked at {utc(key.revoked_at)}."
        )


def register(nouns: Any, leaf: Any) -> None:
    """Add ``keys`` and its verbs. ``leaf(parent, name, handler, help)`` makes a verb's parser."""
    noun = nouns.add_parser("keys", help="API keys: create, list, revoke")
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="{create,list,revoke}")

    p = leaf(verbs, "create", create, "create a key for TENANT (created if missing); the raw key is printed once")
    p.add_argument("tenant", help="tenant id (a slug, e.g. acme)")
    p.add_argument("--name", default="", help="a label for the key")
    p.add_argument(
        "--role",
        action="append",
        dest="roles",
        choices=[r.value for r in Role],
        help="repeatable; default: timer.read, timer.write, timer.cancel",
    )

    p = leaf(verbs, "list", list_, "list keys (never their secrets), newest first")
    p.add_argument("--tenant", help="only this tenant's keys")
    p.add_argument("--all", action="store_true", help="revoked keys too")

    p = leaf(verbs, "revoke", revoke, "revoke a key: every later request with it is a 401")
    p.add_argument("key", help="the key's prefix (as listed) or the whole key")
