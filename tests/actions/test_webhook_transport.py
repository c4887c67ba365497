"""The webhook transport's guarantees that aiohttp's defaults do not give (actions/runners/
webhook_transport.py): one request per attempt, a kept-alive connection never answering for
another request, a body cut short after a 2xx still a success, international host names, and
one tenant unable to take every connection slot of a worker."""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
import time
from typing import Any

import pytest

from actions import batch
from actions.batch import runs_execute_batch
from actions.models import ActionAttempt, ActionRun, AttemptOutcome, RunStatus
from actions.runners import webhook_transport
from actions.runners.webhook_transport import TRANSPORT
from tests.actions.conftest import FireTimer
from tests.actions.support import Receiver, Reply, drive, tcp_server, webhook
from tests.factories import make_timer
from timers import services
from timers.models import Tenant, TimerStatus

pytestmark = pytest.mark.django_db


def outcomes(timer: Any) -> list[tuple[str, int | None]]:
    run = ActionRun.objects.get(timer=timer)
    return [(a.outcome, a.http_status) for a in ActionAttempt.objects.filter(run=run).order_by("number")]


def test_bytes_a_receiver_sends_on_an_idle_kept_alive_connection_are_never_the_next_answer(
    receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    injected = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED"
    receiver.script("/first", Reply(raw=[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", injected], interval=0.05))
    receiver.script("/second", Reply(status=503, body=b"busy"))

    first = drive(fire_timer(webhook("a", f"{receiver.url}/first")))
    time.sleep(0.3)  # the stray reply is on the idle connection by now
    second = fire_timer(webhook("b", f"{receiver.url}/second"), retry={"maxAttempts": 1})
    second = drive(second)

    assert outcomes(first) == [(AttemptOutcome.SUCCEEDED, 200)]
    assert outcomes(second) == [(AttemptOutcome.TRANSIENT, 503)]
    assert "INJECTED" not in ActionAttempt.objects.get(run__timer=second).output_excerpt
    assert [r.path for r in receiver.requests] == ["/first", "/second"]


class ClosesAfterReading(socketserver.BaseRequestHandler):
    """Reads a request and closes without answering; counts the requests it read."""

    requests: list[bytes] = []

    def handle(self) -> None:
        data = self.request.recv(65536)
        if data:
            type(self).requests.append(data.split(b"\r\n", 1)[0])
        self.request.close()


@pytest.mark.parametrize("method", ["PUT", "DELETE", "GET"])
def test_an_attempt_sends_its_request_once_even_when_the_connection_closes_unanswered(
    method: str, allow_private: None, fire_timer: FireTimer
) -> None:
    ClosesAfterReading.requests = []
    with tcp_server(ClosesAfterReading) as port:
        timer = drive(fire_timer(webhook("x", f"http://127.0.0.1:{port}/x", method=method), retry={"maxAttempts": 1}))

    assert outcomes(timer) == [(AttemptOutcome.TRANSIENT, None)]
    assert len(ClosesAfterReading.requests) == 1, ClosesAfterReading.requests


class AnswersPartly(socketserver.BaseRequestHandler):
    """Answers 200 announcing 100 bytes, sends 8 and closes the connection."""

    def handle(self) -> None:
        self.request.recv(65536)
        self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nstarted!")
        self.request.close()


def test_a_2xx_whose_body_is_cut_short_is_a_success_marked_truncated(
    allow_private: None, fire_timer: FireTimer
) -> None:
    with tcp_server(AnswersPartly) as port:
        timer = drive(fire_timer(webhook("cut", f"http://127.0.0.1:{port}/cut")))

    assert timer.status == TimerStatus.SETTLED
    assert outcomes(timer) == [(AttemptOutcome.SUCCEEDED, 200)]
    excerpt = ActionAttempt.objects.get(run__timer=timer).output_excerpt
    assert excerpt.startswith("started!") and "[truncated]" in excerpt


def test_an_international_host_name_is_resolved_checked_and_delivered(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver, allow_private: None, fire_timer: FireTimer
) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("bücher.example", "xn--bcher-kva.example"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    timer = drive(fire_timer(webhook("idn", f"http://bücher.example:{receiver.port}/idn")))

    assert outcomes(timer) == [(AttemptOutcome.SUCCEEDED, 200)]
    [request] = receiver.at("/idn")
    assert request.headers["Host"] == f"xn--bcher-kva.example:{receiver.port}"


def test_one_tenant_cannot_hold_every_connection_slot_of_a_worker(
    tenant: Tenant, other_tenant: Tenant, receiver: Receiver, allow_private: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three slots in the process, two per tenant: A's third hanging webhook waits, B's goes.
    monkeypatch.setattr(TRANSPORT, "_slots", asyncio.Semaphore(3))
    monkeypatch.setattr(TRANSPORT, "_tenant_slots", {})
    monkeypatch.setattr(webhook_transport, "CONNECTIONS_PER_TENANT", 2)
    for i in range(3):
        receiver.script(f"/a{i}", Reply(hang=True))
    timers = [make_timer(tenant=tenant, name=f"a{i}", actions=[webhook("h", f"{receiver.url}/a{i}")]) for i in range(3)]
    timers.append(make_timer(tenant=other_tenant, name="b", actions=[webhook("h", f"{receiver.url}/b")]))
    services.timers_fire(limit=100)
    run_ids = [ActionRun.objects.get(timer=t).pk for t in timers]
    b_while_a_hung = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not receiver.at("/b"):
            time.sleep(0.01)
        if receiver.at("/b") and not receiver.release.is_set():
            b_while_a_hung.set()
        receiver.release.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert runs_execute_batch(run_ids=run_ids) == 4
    watcher.join()

    assert b_while_a_hung.is_set(), "B's webhook waited for tenant A's hanging ones"
    assert len([r for r in receiver.requests if r.path.startswith("/a")]) == 3
    assert ActionRun.objects.filter(pk__in=run_ids, status=RunStatus.SUCCEEDED).count() == 4


def test_a_batch_waiting_for_a_slow_receiver_sleeps_instead_of_polling(
    tenant: Tenant, receiver: Receiver, allow_private: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = Reply(raw=[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", b"ok"], interval=3.0)
    receiver.script("/slow", slow)
    timer = make_timer(tenant=tenant, name="slow", actions=[webhook("h", f"{receiver.url}/slow")])
    services.timers_fire(limit=10)
    calls = []
    real_wait = batch.wait  # type: ignore[attr-defined]

    def counting_wait(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real_wait(*args, **kwargs)

    monkeypatch.setattr(batch, "wait", counting_wait)

    assert runs_execute_batch(run_ids=[ActionRun.objects.get(timer=timer).pk]) == 1

    assert len(calls) <= 3, f"{len(calls)} waits for one 3 s attempt"
