"""The webhook runner against a real HTTP receiver, through ``run_execute``."""

from __future__ import annotations

import ipaddress
import socket
import socketserver
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from standardwebhooks import Webhook, WebhookVerificationError

from actions.errors import ParameterError
from actions.models import ActionRun, AttemptOutcome, RunStatus
from actions.runners import get_runner
from actions.runners.webhook import WebhookParams, address_refusal
from tests.actions.conftest import FireTimer
from tests.actions.support import Receiver, Reply, Sent, dripped, drive, execute_next, tcp_server, webhook, write_raw
from timers.models import Tenant, TimerEvent, TimerStatus

pytestmark = pytest.mark.django_db


def attempts_of(run: ActionRun) -> list[tuple[str, int | None]]:
    return [(a.outcome, a.http_status) for a in run.attempt_records.order_by("number")]


def test_delivered_webhook_verifies_with_the_tenant_secret_and_carries_the_timer(
    tenant: Tenant, receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    timer = fire_timer(webhook("notify", f"{receiver.url}/hook", headers={"X-Custom": "yes"}))

    timer = drive(timer)

    [request] = receiver.at("/hook")
    payload = Webhook(tenant.webhook_secret).verify(request.body, request.headers)
    assert payload["event"] == "timer.fired"
    assert payload["timer"]["id"] == str(timer.pk)
    assert payload["timer"]["status"] == "fired"
    assert request.method == "POST"
    assert request.headers["x-minoots-timer-id"] == str(timer.pk)
    assert request.headers["x-minoots-tenant-id"] == "acme"
    assert request.headers["X-Custom"] == "yes"
    assert request.headers["Content-Type"] == "application/json"
    assert timer.status == TimerStatus.SETTLED
    run = ActionRun.objects.get(timer=timer)
    assert run.status == RunStatus.SUCCEEDED
    assert request.headers["webhook-id"] == str(run.pk)
    assert attempts_of(run) == [(AttemptOutcome.SUCCEEDED, 200)]
    assert run.attempt_records.get().output_excerpt == "ok"


def test_webhook_with_a_forged_signature_does_not_verify(
    tenant: Tenant, receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    drive(fire_timer(webhook("notify", f"{receiver.url}/hook")))

    [request] = receiver.at("/hook")
    with pytest.raises(WebhookVerificationError):
        Webhook(tenant.webhook_secret).verify(request.body + b" ", request.headers)


def test_custom_string_body_and_method_are_sent_and_signed_as_given(
    tenant: Tenant, receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    drive(fire_timer(webhook("put", f"{receiver.url}/put", method="put", body="plain text")))

    [request] = receiver.at("/put")
    assert request.method == "PUT"
    assert request.body == b"plain text"
    Webhook(tenant.webhook_secret).verify(request.body, request.headers, json_parse=False)


def test_server_error_is_retried_and_the_retry_keeps_the_same_webhook_id(
    tenant: Tenant, receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    receiver.script("/flaky", Reply(500, b"boom"))
    timer = fire_timer(webhook("notify", f"{receiver.url}/flaky"))

    timer = drive(timer)

    first, second = receiver.at("/flaky")
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    for request in (first, second):
        Webhook(tenant.webhook_secret).verify(request.body, request.headers)
    run = ActionRun.objects.get(timer=timer)
    assert run.status == RunStatus.SUCCEEDED
    assert run.attempts == 2
    assert attempts_of(run) == [(AttemptOutcome.TRANSIENT, 500), (AttemptOutcome.SUCCEEDED, 200)]
    attempt = run.attempt_records.first()
    assert attempt is not None
    assert attempt.output_excerpt == "boom"
    assert timer.status == TimerStatus.SETTLED
    kinds = list(TimerEvent.objects.filter(timer=timer).values_list("kind", flat=True))
    assert kinds[-3:] == ["action.retrying", "action.succeeded", "settled"]


@pytest.mark.parametrize("status", [408, 425, 429, 502, 503])
def test_retryable_statuses_are_transient(
    status: int, receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    receiver.script("/x", Reply(status))
    timer = fire_timer(webhook("notify", f"{receiver.url}/x"))

    execute_next(timer)

    run = ActionRun.objects.get(timer=timer)
    assert run.status == RunStatus.PENDING
    assert attempts_of(run) == [(AttemptOutcome.TRANSIENT, status)]


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
def test_client_errors_fail_the_action_without_retry(
    status: int, receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    receiver.script("/bad", Reply(status, b"nope"))
    timer = fire_timer(webhook("notify", f"{receiver.url}/bad"))

    timer = drive(timer)

    assert len(receiver.at("/bad")) == 1
    run = ActionRun.objects.get(timer=timer)
    assert run.status == RunStatus.FAILED
    assert attempts_of(run) == [(AttemptOutcome.PERMANENT, status)]
    assert run.last_error == f"HTTP {status}"
    assert timer.status == TimerStatus.FAILED
    assert timer.failure_reason == "actions failed: notify"


def test_redirect_is_not_followed(receiver: Receiver, allow_private: None, fire_timer: FireTimer) -> None:
    receiver.script("/moved", Reply(302, b"", {"Location": "http://169.254.169.254/latest/meta-data/"}))
    timer = fire_timer(webhook("notify", f"{receiver.url}/moved"))

    timer = drive(timer)

    assert [r.path for r in receiver.requests] == ["/moved"]
    run = ActionRun.objects.get(timer=timer)
    assert run.status == RunStatus.FAILED
    assert "not followed" in run.last_error


def test_slow_receiver_times_out_as_a_transient_failure(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    receiver.script("/slow", Reply(hang=True))
    timer = fire_timer(webhook("notify", f"{receiver.url}/slow", timeoutMs=200), retry={"maxAttempts": 1})

    timer = drive(timer)

    run = ActionRun.objects.get(timer=timer)
    assert run.status == RunStatus.FAILED
    assert attempts_of(run) == [(AttemptOutcome.TRANSIENT, None)]
    assert "timed out after 200 ms" in run.last_error
    assert timer.status == TimerStatus.FAILED


def test_retry_after_sets_the_next_attempt_no_earlier_than_the_server_asked(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    receiver.script("/busy", Reply(503, b"", {"Retry-After": "120"}))
    timer = fire_timer(webhook("notify", f"{receiver.url}/busy"), retry={"backoffInitialMs": 10})
    before = timezone.now()

    execute_next(timer)

    run = ActionRun.objects.get(timer=timer)
    assert run.status == RunStatus.PENDING
    assert run.next_attempt_at is not None
    assert run.next_attempt_at >= before + timedelta(seconds=120)


def test_response_body_is_read_up_to_64_kib(receiver: Receiver, allow_private: None, fire_timer: FireTimer) -> None:
    receiver.script("/big", Reply(200, b"x" * 200_000))
    timer = fire_timer(webhook("notify", f"{receiver.url}/big"))

    timer = drive(timer)

    run = ActionRun.objects.get(timer=timer)
    assert run.status == RunStatus.SUCCEEDED
    excerpt = run.attempt_records.get().output_excerpt
    assert len(excerpt.encode()) <= 4096
    assert excerpt.endswith("[truncated]")


def test_connection_refused_is_transient(allow_private: None, fire_timer: FireTimer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        timer = fire_timer(webhook("notify", f"http://127.0.0.1:{port}/"))
        execute_next(timer)

    run = ActionRun.objects.get(timer=timer)
    assert run.status == RunStatus.PENDING
    assert "connection to 127.0.0.1 failed" in run.last_error


# --- SSRF ----------------------------------------------------------------------------------

PRIVATE_URLS = [
    "http://127.0.0.1:9/hook",
    "http://10.0.0.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:9/hook",
    "http://localhost:9/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://[2002:a9fe:a9fe::]/",  # 6to4 of 169.254.169.254
    "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",  # Teredo, client 127.0.0.1
    "http://[3fff::1]/",  # documentation
]


@pytest.mark.parametrize(
    ("address", "refusal"),
    [
        ("2002:7f00:1::", "loopback (6to4 127.0.0.1)"),
        ("2002:a00:1::", "private (6to4 10.0.0.1)"),
        ("2002:a9fe:a9fe::", "link-local (6to4 169.254.169.254)"),
        ("2002:c0a8:101::", "private (6to4 192.168.1.1)"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback (Teredo client 127.0.0.1)"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private (Teredo client 10.0.0.1)"),
        ("64:ff9b::7f00:1", "loopback (NAT64 of 127.0.0.1)"),
        ("64:ff9b::a9fe:a9fe", "link-local (NAT64 of 169.254.169.254)"),
        ("3fff::1", "documentation"),
        ("3fff:fff:ffff::1", "documentation"),
        # Public: what they carry is public too.
        ("2002:5db8:d70e::", None),
        ("64:ff9b::5db8:d70e", None),  # what DNS64 answers for an IPv4-only host
        ("2606:4700::1111", None),
    ],
)
def test_an_ipv6_address_carrying_an_ipv4_one_is_judged_by_that_address_too(address: str, refusal: str | None) -> None:
    assert address_refusal(ipaddress.ip_address(address)) == refusal


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_private_targets_are_refused_at_validation(url: str) -> None:
    with pytest.raises(ParameterError) as info:
        get_runner("webhook").validate({"url": url}, tenant_id="acme")
    assert info.value.field == "url"
    assert "MINOOTS_WEBHOOK_ALLOW_PRIVATE" in info.value.message


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_private_targets_are_refused_again_when_the_action_runs(
    url: str, receiver: Receiver, fire_timer: FireTimer
) -> None:
    timer = fire_timer(webhook("notify", url))  # stored without the API's validation

    timer = drive(timer)

    run = ActionRun.objects.get(timer=timer)
    assert run.status == RunStatus.FAILED
    assert run.attempts == 1
    assert run.attempt_records.get().outcome == AttemptOutcome.PERMANENT
    assert "MINOOTS_WEBHOOK_ALLOW_PRIVATE" in run.last_error
    assert receiver.requests == []


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """Make ``socket.getaddrinfo`` answer ``answers[host]`` one address per call (the last one
    repeats); return the log of looked-up hosts."""
    real = socket.getaddrinfo
    looked_up: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            looked_up.append(host)
            queue = answers[host]
            address = queue.pop(0) if len(queue) > 1 else queue[0]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


def test_hostname_resolving_to_loopback_is_refused_when_the_action_runs(
    monkeypatch: pytest.MonkeyPatch, fire_timer: FireTimer
) -> None:
    fake_dns(monkeypatch, {"sneaky.example.com": ["127.0.0.1"]})

    timer = drive(fire_timer(webhook("notify", "http://sneaky.example.com/")))

    run = ActionRun.objects.get(timer=timer)
    assert run.status == RunStatus.FAILED
    assert "127.0.0.1, a loopback address" in run.last_error


def test_creating_a_webhook_resolves_no_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # The run-time check is the authority; a lookup inside the web request would only make
    # creates as slow as the slowest DNS server a tenant can name.
    looked_up = fake_dns(monkeypatch, {"sneaky.example.com": ["127.0.0.1"]})

    for url in ("http://sneaky.example.com/", "http://does-not-resolve.invalid/"):
        assert get_runner("webhook").validate({"url": url}, tenant_id="acme")["url"] == url

    assert looked_up == []


def test_parameters_parse_into_a_typed_object_whose_json_form_is_what_validation_returns(settings: Any) -> None:
    settings.ACTION_WEBHOOK_TIMEOUT_MS = 5000
    parameters = {"url": "https://93.184.215.14:8443/hook", "method": "put", "headers": {"X-Team": "ops"}}

    params = get_runner("webhook").parse(parameters, tenant_id="acme")

    assert params == WebhookParams(
        url="https://93.184.215.14:8443/hook",
        host="93.184.215.14",
        port=8443,
        method="PUT",
        headers={"X-Team": "ops"},
        timeout_ms=5000,
    )
    assert (
        get_runner("webhook").validate(parameters, tenant_id="acme")
        == params.to_json()
        == {"url": "https://93.184.215.14:8443/hook", "method": "PUT", "headers": {"X-Team": "ops"}, "timeoutMs": 5000}
    )


def test_parsing_for_an_attempt_leaves_the_dns_check_to_the_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up = fake_dns(monkeypatch, {"sneaky.example.com": ["127.0.0.1"]})

    params = get_runner("webhook").parse({"url": "http://sneaky.example.com/"}, tenant_id="acme")

    assert params.host == "sneaky.example.com"
    assert looked_up == []


def test_host_that_resolves_to_a_private_address_by_fire_time_is_refused(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver, fire_timer: FireTimer
) -> None:
    fake_dns(monkeypatch, {"flip.example.com": ["93.184.215.14", "127.0.0.1"]})
    url = f"http://flip.example.com:{receiver.port}/"
    get_runner("webhook").validate({"url": url}, tenant_id="acme")  # public when the timer was created

    timer = drive(fire_timer(webhook("notify", url)))

    run = ActionRun.objects.get(timer=timer)
    assert run.status == RunStatus.FAILED
    assert "127.0.0.1, a loopback address" in run.last_error
    assert receiver.requests == []


def test_connection_goes_to_the_checked_address_even_if_dns_changes_afterwards(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    # First answer: the receiver. Any later lookup (a re-resolution at connect time) would get
    # an address where nothing listens.
    looked_up = fake_dns(monkeypatch, {"rebind.example.com": ["127.0.0.1", "127.0.0.2"]})
    timer = fire_timer(webhook("notify", f"http://rebind.example.com:{receiver.port}/pinned"))
    looked_up.clear()

    timer = drive(timer)

    [request] = receiver.at("/pinned")
    assert request.headers["Host"] == f"rebind.example.com:{receiver.port}"
    assert looked_up == ["rebind.example.com"]
    assert timer.status == TimerStatus.SETTLED


def test_https_target_is_verified_against_its_hostname_while_pinned(
    monkeypatch: pytest.MonkeyPatch, tls_receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    fake_dns(monkeypatch, {"secure.example.com": ["127.0.0.1"]})
    timer = fire_timer(webhook("notify", f"https://secure.example.com:{tls_receiver.port}/tls"))

    timer = drive(timer)

    [request] = tls_receiver.at("/tls")
    assert request.headers["Host"] == f"secure.example.com:{tls_receiver.port}"
    assert timer.status == TimerStatus.SETTLED


def test_https_target_with_a_certificate_for_another_name_fails_for_good(
    monkeypatch: pytest.MonkeyPatch, tls_receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    fake_dns(monkeypatch, {"impostor.example.com": ["127.0.0.1"]})
    timer = fire_timer(webhook("notify", f"https://impostor.example.com:{tls_receiver.port}/tls"))

    timer = drive(timer)

    run = ActionRun.objects.get(timer=timer)
    assert run.status == RunStatus.FAILED
    assert "TLS error" in run.last_error
    assert tls_receiver.requests == []


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({}, "url"),
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"url": "http:///nohost"}, "url"),
        ({"url": "https://example.com/", "method": "TRACE"}, "method"),
        ({"url": "https://example.com/", "timeoutMs": 0}, "timeoutMs"),
        ({"url": "https://example.com/", "timeoutMs": "10"}, "timeoutMs"),
        ({"url": "https://example.com/", "headers": {"webhook-signature": "v1,x"}}, "headers"),
        ({"url": "https://example.com/", "headers": {"X-A": "a\r\nInjected: 1"}}, "headers"),
        ({"url": "https://example.com/", "retries": 3}, "retries"),
        ({"url": "http://[::1"}, "url"),
        ({"url": "http://example.com:99999/"}, "url"),
        ({"url": "http://exa mple.com/"}, "url"),
        ({"url": "https://example.com/", "headers": {"X-A": "caf\u00e9 \u2615"}}, "headers"),
        ({"url": "https://example.com/", "headers": {"X-A": " leading"}}, "headers"),
        ({"url": "https://example.com/", "headers": {"X-A": "trailing "}}, "headers"),
        ({"url": "https://example.com/", "headers": {"X-A": "\ttab"}}, "headers"),
    ],
)
def test_invalid_webhook_parameters_name_the_field(parameters: dict[str, Any], field: str) -> None:
    with pytest.raises(ParameterError) as info:
        get_runner("webhook").validate(parameters, tenant_id="acme")
    assert info.value.field == field


def test_a_cookie_set_by_one_receiver_is_never_sent_with_later_webhooks(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    receiver.script("/first", Reply(status=200, headers={"Set-Cookie": "session=secret-of-tenant-a; Path=/"}))
    drive(fire_timer(webhook("first", f"{receiver.url}/first")))

    drive(fire_timer(webhook("second", f"{receiver.url}/second")))

    [second] = receiver.at("/second")
    assert "Cookie" not in second.headers and "cookie" not in second.headers


def test_the_default_body_does_not_reveal_other_actions_parameters(
    tenant: Tenant, receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    secret_call = webhook("internal", f"{receiver.url}/internal", headers={"Authorization": "Bearer internal-token"})
    timer = drive(fire_timer(secret_call, webhook("public", f"{receiver.url}/public"), concurrency=2))

    [public] = receiver.at("/public")
    payload = Webhook(tenant.webhook_secret).verify(public.body, public.headers)
    assert payload["timer"]["id"] == str(timer.pk)
    assert "actionBundle" not in payload["timer"]
    assert b"internal-token" not in public.body


# --- timeoutMs bounds the whole attempt -----------------------------------------------------

DRIP = 0.2  # seconds between the pieces of a slow reply: far inside timeoutMs, so no single read times out
DEADLINE_MS = 800
SLOW_REPLIES = {
    "body-connection-close": dripped(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"x" * 40, DRIP),
    "body-keep-alive": dripped(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n", b"x" * 40, DRIP),
    "status-line": dripped(b"", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", DRIP),
    "header-value": dripped(b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a" * 40 + b"\r\nContent-Length: 2\r\n\r\nok", DRIP),
    "many-header-lines": Reply(
        raw=[b"HTTP/1.1 200 OK\r\n", *(b"X-Line-%d: v\r\n" % i for i in range(40)), b"Content-Length: 2\r\n\r\nok"],
        interval=DRIP,
    ),
}


@pytest.mark.parametrize("form", list(SLOW_REPLIES))
def test_a_slow_receiver_is_hung_up_on_at_the_deadline_and_the_attempt_is_a_timeout(
    form: str, receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    receiver.script("/slow", SLOW_REPLIES[form])

    timer = drive(fire_timer(webhook("slow", f"{receiver.url}/slow", timeoutMs=DEADLINE_MS), retry={"maxAttempts": 1}))

    sent = receiver.wait_sent("/slow")
    # Cut mid-reply: the runner closed the connection before the receiver had sent it all.
    assert sent.hung_up and sent.sent < sent.total, sent
    run = ActionRun.objects.get(timer=timer)
    assert attempts_of(run) == [(AttemptOutcome.TRANSIENT, None)]
    assert run.last_error == f"timed out after {DEADLINE_MS} ms"


def test_an_interim_1xx_response_is_skipped_and_the_final_status_is_the_attempts(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    receiver.script(
        "/interim",
        Reply(
            raw=[
                b"HTTP/1.1 102 Processing\r\n\r\n",
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone",
            ],
            interval=0.05,
        ),
    )

    first = ActionRun.objects.get(timer=drive(fire_timer(webhook("interim", f"{receiver.url}/interim"))))
    # The same kept-alive connection stays in step: the next webhook gets its own reply.
    second = ActionRun.objects.get(timer=drive(fire_timer(webhook("after", f"{receiver.url}/after"))))

    assert attempts_of(first) == [(AttemptOutcome.SUCCEEDED, 200)]
    assert first.attempt_records.get().output_excerpt == "done"
    assert attempts_of(second) == [(AttemptOutcome.SUCCEEDED, 200)]
    assert second.attempt_records.get().output_excerpt == "ok"
    assert [r.path for r in receiver.requests] == ["/interim", "/after"]


def test_header_values_with_surrounding_whitespace_are_refused_at_create_naming_headers() -> None:
    for value in (" x", "x ", "\tx", "x\t"):
        with pytest.raises(ParameterError) as info:
            get_runner("webhook").validate(
                {"url": "https://93.184.215.14/", "headers": {"X-Team": value}}, tenant_id="acme"
            )
        assert info.value.field == "headers"
        assert "whitespace" in info.value.message


def test_a_receiver_dripping_its_tls_handshake_is_hung_up_on_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch, allow_private: None, fire_timer: FireTimer
) -> None:
    fake_dns(monkeypatch, {"secure.example.com": ["127.0.0.1"]})
    # A TLS record header announcing 64 bytes, which then come one at a time.
    dribble = Reply(raw=[b"\x16\x03\x03\x00\x40", *[b"\x00"] * 64], interval=DRIP)
    sent: list[Sent] = []
    done = threading.Event()

    class Handshake(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(65536)  # the ClientHello
            sent.append(write_raw(self.request, dribble))
            done.set()

    with tcp_server(Handshake) as port:
        url = f"https://secure.example.com:{port}/"
        timer = drive(fire_timer(webhook("tls", url, timeoutMs=DEADLINE_MS), retry={"maxAttempts": 1}))

    run = ActionRun.objects.get(timer=timer)
    assert attempts_of(run) == [(AttemptOutcome.TRANSIENT, None)]
    assert run.last_error == f"timed out after {DEADLINE_MS} ms"
    assert done.wait(30)
    [record] = sent
    assert record.hung_up and record.sent < record.total, record


def test_a_name_lookup_slower_than_the_deadline_ends_the_attempt_as_a_timeout(
    monkeypatch: pytest.MonkeyPatch, allow_private: None, fire_timer: FireTimer
) -> None:
    """getaddrinfo has no timeout of its own: a resolver that takes seconds (the stand-in for
    a DNS server that does not answer) must not hold the attempt past its timeoutMs."""
    real = socket.getaddrinfo
    release = threading.Event()

    def slow_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "slow-dns.example.com":
            release.wait(10)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    started = time.monotonic()
    try:
        timer = drive(
            fire_timer(
                webhook("dns", "http://slow-dns.example.com/hook", timeoutMs=DEADLINE_MS), retry={"maxAttempts": 1}
            )
        )
    finally:
        release.set()
    assert time.monotonic() - started < DEADLINE_MS / 1000 + 2.0
    run = ActionRun.objects.get(timer=timer)
    assert attempts_of(run) == [(AttemptOutcome.TRANSIENT, None)]
    assert run.last_error == f"timed out after {DEADLINE_MS} ms (resolving 'slow-dns.example.com')"
