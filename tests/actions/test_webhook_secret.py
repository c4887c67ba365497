"""Signing secrets: print and rotate them; during 24 h after a rotation both secrets verify."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from standardwebhooks import Webhook, WebhookVerificationError

from tests.actions.conftest import FireTimer
from tests.actions.support import Receiver, drive, webhook
from timers.models import Tenant

pytestmark = pytest.mark.django_db


def run_command(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("webhook_secret", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_command_prints_the_secret_alone_on_the_last_line(tenant: Tenant) -> None:
    out, err = run_command("acme")

    assert out.splitlines()[-1] == tenant.webhook_secret
    assert tenant.webhook_secret.startswith("whsec_")
    assert tenant.webhook_secret not in err


def test_rotate_prints_a_new_secret_and_keeps_the_previous_one(tenant: Tenant) -> None:
    old = tenant.webhook_secret

    out, err = run_command("acme", "--rotate")

    tenant.refresh_from_db()
    new = out.splitlines()[-1]
    assert new == tenant.webhook_secret != old
    assert tenant.previous_webhook_secret == old
    assert tenant.webhook_secret_rotated_at is not None
    assert "24 hours" in err


def test_unknown_tenant_is_an_error(db: Any) -> None:
    with pytest.raises(CommandError, match="no tenant 'nobody'"):
        run_command("nobody")


def test_after_rotation_webhooks_verify_with_the_old_and_the_new_secret(
    tenant: Tenant, receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    old = tenant.webhook_secret
    new = run_command("acme", "--rotate")[0].splitlines()[-1]

    drive(fire_timer(webhook("a", f"{receiver.url}/a")))

    [request] = receiver.requests
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(request.body, request.headers)
    Webhook(old).verify(request.body, request.headers)


def test_a_day_after_rotation_only_the_new_secret_signs(
    tenant: Tenant, receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    old = tenant.webhook_secret
    new = run_command("acme", "--rotate")[0].splitlines()[-1]
    Tenant.objects.filter(pk="acme").update(webhook_secret_rotated_at=timezone.now() - timedelta(hours=24, minutes=1))

    drive(fire_timer(webhook("a", f"{receiver.url}/a")))

    [request] = receiver.requests
    Webhook(new).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(request.body, request.headers)


def test_admin_action_rotates_the_secret_and_shows_the_new_one(tenant: Tenant, admin_client: Client) -> None:
    old = tenant.webhook_secret

    response = admin_client.post(
        "/admin/timers/tenant/",
        {"action": "rotate_webhook_secret", "_selected_action": ["acme"]},
        follow=True,
    )

    tenant.refresh_from_db()
    assert response.status_code == 200
    assert tenant.webhook_secret != old
    assert tenant.previous_webhook_secret == old
    assert tenant.webhook_secret in response.content.decode()
