"""Print (or rotate, then print) a tenant's webhook signing secret, alone on the last line."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from actions.secrets import PREVIOUS_SECRET_VALIDITY, tenant_webhook_secret_rotate, webhook_secrets_in_force
from timers.models import Tenant


class Command(BaseCommand):
    help = (
        "Print TENANT's Standard Webhooks signing secret (whsec_...) on the last line of stdout. "
        "--rotate first replaces it; the previous secret keeps signing for 24 hours."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("tenant", help="tenant id")
        parser.add_argument("--rotate", action="store_true", help="generate a new secret first")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant_id = options["tenant"]
        if not Tenant.objects.filter(pk=tenant_id).exists():
            raise CommandError(f"no tenant '{tenant_id}'")
        if options["rotate"]:
            secret = tenant_webhook_secret_rotate(tenant_id=tenant_id)
            hours = int(PREVIOUS_SECRET_VALIDITY.total_seconds() // 3600)
            self.stderr.write(
                f"Rotated the webhook secret of tenant '{tenant_id}'. Webhooks carry signatures with both "
                f"the new and the previous secret for {hours} hours. New secret:"
            )
        else:
            secret = webhook_secrets_in_force(tenant_id=tenant_id).current
            self.stderr.write(f"Webhook signing secret of tenant '{tenant_id}':")
        self.stdout.write(secret)
