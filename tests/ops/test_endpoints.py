"""/healthz, /readyz and /metrics: what they answer, to whom, and when a dependency is down."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import requests
from django.test import Client
from prometheus_client import REGISTRY

from minoots_project.health import metrics_allowed
from tests.assertions import assert_error
from tests.net import free_port
from tests.processes import PYTHON, Processes, service_env
from timers import metrics
from timers.models import Tenant


def test_healthz_answers_without_credentials_or_database() -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["x-trace-id"]  # every response carries its trace id


@pytest.mark.django_db
def test_readyz_is_ready_when_database_migrations_and_broker_are_fine() -> None:
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "migrations": "ok", "broker": "ok"}}


@pytest.mark.django_db(transaction=True)
@pytest.mark.e2e
def test_readyz_names_the_broker_when_it_is_unreachable(processes: Processes) -> None:
    port = free_port()
    env = service_env(
        processes.workdir / "data", CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0", PORT=str(port)
    )
    processes.start(
        "web",
        [PYTHON, "-m", "gunicorn", "-c", "minoots_project/gunicorn.conf.py", "minoots_project.wsgi"],
        env=env,
        ready="Booting worker",
    )
    base = f"http://127.0.0.1:{port}"
    assert requests.get(f"{base}/healthz", timeout=10).status_code == 200  # liveness ignores the broker

    response = requests.get(f"{base}/readyz", timeout=10)
    body = assert_error(response, 503)
    assert response.headers["Retry-After"]
    assert body["message"] == "Not ready: broker down"
    assert body["details"]["down"] == ["broker"]
    assert body["details"]["checks"]["database"] == "ok"
    assert body["details"]["checks"]["broker"].startswith("down: ")
    assert "127.0.0.1" not in response.text  # names what is down, reveals no address


@pytest.mark.django_db
def test_metrics_from_loopback_list_the_minoots_families(tenant: Tenant) -> None:
    metrics.timer_transition(tenant.id, "created")
    metrics.action_attempt("webhook", "succeeded", 0.2)
    metrics.RECONCILE_RUNS.inc()
    metrics.RECONCILE_ACTIONS.labels(kind="repaired").inc(2)

    response = Client(REMOTE_ADDR="127.0.0.1").get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    for family in (
        f'minoots_timers_created_total{{tenant="{tenant.id}"}}',
        'minoots_action_attempts_total{kind="webhook",outcome="succeeded"}',
        'minoots_action_duration_seconds_bucket{kind="webhook",le="0.25"}',
        "minoots_reconcile_runs_total",
        'minoots_reconcile_repairs_total{kind="repaired"}',
        "minoots_fire_lateness_seconds_bucket",
        "minoots_timers_armed 0.0",
        "minoots_timers_scheduled 0.0",
    ):
        assert family in text, family


@pytest.mark.django_db
def test_metrics_from_another_host_are_refused_without_a_token() -> None:
    assert_error(Client(REMOTE_ADDR="10.1.2.3").get("/metrics"), 403, contains="MINOOTS_METRICS_TOKEN")


@pytest.mark.django_db
def test_metrics_with_a_token_need_the_bearer_token_from_anywhere(settings: Any) -> None:
    settings.MINOOTS_METRICS_TOKEN = "s3cret-token"
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 401
    wrong = Client(REMOTE_ADDR="10.1.2.3").get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 401 and wrong["WWW-Authenticate"].startswith("Bearer")
    right = Client(REMOTE_ADDR="10.1.2.3").get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert right.status_code == 200


@pytest.mark.parametrize(
    ("authorization", "remote", "token", "allowed"),
    [
        ("", "127.0.0.1", "", True),
        ("", "::1", "", True),
        ("", "192.168.1.5", "", False),
        ("", "not-an-ip", "", False),
        ("Bearer t", "10.0.0.1", "t", True),
        ("bearer t", "10.0.0.1", "t", True),
        ("Basic t", "127.0.0.1", "t", False),
        ("", "127.0.0.1", "t", False),
    ],
)
def test_metrics_access_rule(authorization: str, remote: str, token: str, allowed: bool) -> None:
    assert metrics_allowed(authorization=authorization, remote_addr=remote, token=token) is allowed


def _timer_samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in REGISTRY.collect()
        if family.name.startswith("minoots_timers_")
        for sample in family.samples
    }


def test_unknown_timer_event_is_logged_and_counts_nothing(caplog: pytest.LogCaptureFixture) -> None:
    metrics.timer_transition("acme", "created")  # the tenant's series exist before the call
    before = _timer_samples()

    with caplog.at_level(logging.WARNING, logger="timers.metrics"):
        metrics.timer_transition("acme", "exploded")

    assert _timer_samples() == before  # no series changed, none appeared
    assert [r.getMessage() for r in caplog.records] == ["unknown timer metric event 'exploded'"]


def test_metrics_through_a_reverse_proxy_on_loopback_are_refused_without_a_token() -> None:
    response = Client(REMOTE_ADDR="127.0.0.1").get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert response.status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete", "options"])
def test_other_methods_than_get_are_a_json_405_not_the_csrf_page(path: str, method: str) -> None:
    client = Client(REMOTE_ADDR="127.0.0.1", enforce_csrf_checks=True)
    response = getattr(client, method)(path, data=b"{}", content_type="application/json")
    body = assert_error(response, 405, contains=method.upper())
    assert body["details"] == {"allowed": ["GET", "HEAD"]}
    assert response["Allow"] == "GET, HEAD"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_head_is_answered_like_get_without_a_body(path: str) -> None:
    response = Client(REMOTE_ADDR="127.0.0.1").head(path)
    assert response.status_code == 200
    assert response.content == b""
