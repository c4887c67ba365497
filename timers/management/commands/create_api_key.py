"""Create an API key for a tenant (creating the tenant if needed); print the raw key last."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_slug

from timers import keys
from timers.models import ApiKey, Role, Tenant


class Command(BaseCommand):
    help = "Create an API key for TENANT (created if missing). The raw key is printed once, on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("tenant", help="tenant id (a slug, e.g. acme)")
        parser.add_argument("--name", default="", help="a label for the key")
        parser.add_argument(
            "--role",
            action="append",
            dest="roles",
            choices=[r.value for r in Role],
            help="repeatable; default: timer.read, timer.write, timer.cancel",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant_id, name = options["tenant"], options["name"]
        try:
            validate_slug(tenant_id)
        except ValidationError as exc:
            raise CommandError(f"tenant must be a slug (letters, digits, '-' or '_'): {tenant_id!r}") from exc
        max_tenant = Tenant._meta.get_field("id").max_length or 64
        if len(tenant_id) > max_tenant:
            raise CommandError(f"tenant must be at most {max_tenant} characters: {tenant_id!r}")
        max_name = ApiKey._meta.get_field("name").max_length or 100
        if len(name) > max_name:
            raise CommandError(f"--name must be at most {max_name} characters")
        tenant, created = keys.tenant_get_or_create(tenant_id=tenant_id)
        key, raw = keys.api_key_create(tenant=tenant, name=name, roles=options["roles"])
        if created:
            self.stderr.write(f"Created tenant '{tenant.id}'.")
        self.stderr.write(
            f"API key {key.prefix} for tenant '{tenant.id}' with roles {', '.join(key.roles)}; it is shown only now:"
        )
        self.stdout.write(raw)
