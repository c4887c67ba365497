"""Create an API key for a tenant (creating the tenant if needed); print the raw key last."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from timers import keys
from timers.models import Role


class Command(BaseCommand):
    help = "Create an API key for TENANT (created if missing). The raw key is printed once, on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("tenant", help="tenant id (a slug, e.g. acme)")
        parser.add_argument("--name", default="", help="a label for the key")
        parser.add_argument(
            "--role", action="append", dest="roles", choices=[r.value for r in Role],
            help="repeatable; default: timer.read, timer.write, timer.cancel",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from django.core.validators import validate_slug
        from django.core.exceptions import ValidationError

        try:
            validate_slug(options["tenant"])
        except ValidationError as exc:
            raise CommandError(f"tenant must be a slug (letters, digits, '-' or '_'): {options['tenant']!r}") from exc
        tenant, created = keys.tenant_get_or_create(tenant_id=options["tenant"])
        key, raw = keys.api_key_create(tenant=tenant, name=options["name"], roles=options["roles"])
        if created:
            self.stderr.write(f"Created tenant '{tenant.id}'.")
        self.stderr.write(f"API key {key.prefix} for tenant '{tenant.id}' with roles {', '.join(key.roles)}; it is shown only now:")
        self.stdout.write(raw)
