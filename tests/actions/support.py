"""Helpers for the action tests: a real HTTP receiver on 127.0.0.1 and a driver that executes
due runs by calling ``run_execute`` directly (no worker)."""

from __future__ import annotations

import json
import select
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis
from django.utils import timezone

from actions.execution import run_execute
from actions.models import ActionRun, RunStatus
from tests.broker import queued_tasks
from timers.models import Timer


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # hold the request until the test ends (to provoke a timeout)
    # Written as is instead of a status line, headers and body: the first chunk at once, each
    # later one ``interval`` seconds after the previous (a slow or dripping receiver). Plain
    # HTTP only. The receiver stops as soon as the client hangs up (see ``Sent``).
    raw: list[bytes] | None = None
    interval: float = 0.0


def dripped(head: bytes, tail: bytes, interval: float) -> Reply:
    """A raw reply: ``head`` at once, then ``tail`` one byte every ``interval`` seconds."""
    return Reply(raw=[head, *(tail[i : i + 1] for i in range(len(tail)))], interval=interval)


@dataclass
class Sent:
    """How much of a raw reply the receiver wrote before it finished or was hung up on."""

    path: str
    sent: int  # bytes written
    total: int  # bytes of the whole reply
    hung_up: bool  # the client closed the connection before the reply was complete


def write_raw(sock: socket.socket, reply: Reply, *, path: str = "", stop: threading.Event | None = None) -> Sent:
    """Write ``reply.raw`` to ``sock`` piece by piece, stopping as soon as the client hangs up."""
    chunks = reply.raw or []
    sent, hung_up = 0, False
    for index, chunk in enumerate(chunks):
        if index and _hung_up_within(sock, reply.interval, stop):
            hung_up = True
            break
        try:
            sock.sendall(chunk)
        except OSError:
            hung_up = True
            break
        sent += len(chunk)
    return Sent(path, sent, sum(map(len, chunks)), hung_up)


def _hung_up_within(sock: socket.socket, seconds: float, stop: threading.Event | None) -> bool:
    """Wait ``seconds``; True as soon as the client closes its end (or ``stop`` is set)."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if stop is not None and stop.is_set():
            return True
        readable, _, _ = select.select([sock], [], [], min(left, 0.05))
        if readable:
            try:
                if sock.recv(1, socket.MSG_PEEK) == b"":
                    return True
            except OSError:
                return True
            time.sleep(min(left, 0.05))  # the client sent something: just wait
    return False


class Receiver:
    """A threaded HTTP server that records every request and answers from a script.

    ``script(path, *replies)`` queues replies for a path; once used up, the path answers 200.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.requests: list[Received] = []
        self.sent: list[Sent] = []
        self.replied = threading.Condition()
        self._scripts: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        self.release = threading.Event()
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                reply = receiver._record(Received(self.command, self.path, dict(self.headers.items()), body))
                if reply.hang:
                    receiver.release.wait(30)
                if reply.raw is not None:
                    self._write_raw(reply)
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def _write_raw(self, reply: Reply) -> None:
                sent = write_raw(self.connection, reply, path=self.path, stop=receiver.release)
                if sent.hung_up:
                    self.close_connection = True
                with receiver.replied:
                    receiver.sent.append(sent)
                    receiver.replied.notify_all()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if ssl_context is not None:
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def _record(self, received: Received) -> Reply:
        with self._lock:
            self.requests.append(received)
            script = self._scripts.get(received.path.split("?")[0])
            reply = script.pop(0) if script else Reply()
        self.arrived.set()
        return reply

    def script(self, path: str, *replies: Reply) -> None:
        with self._lock:
            self._scripts.setdefault(path, []).extend(replies)

    def wait_sent(self, path: str, timeout: float = 30) -> Sent:
        """The ``Sent`` record of the first raw reply to ``path``, once it is complete or cut."""
        with self.replied:
            self.replied.wait_for(lambda: any(s.path.split("?")[0] == path for s in self.sent), timeout)
            matches = [s for s in self.sent if s.path.split("?")[0] == path]
        assert matches, f"no raw reply to {path} finished within {timeout} s"
        return matches[0]

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path.split("?")[0] == path]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def queued_runs(broker: redis.Redis) -> list[tuple[str, datetime | None]]:
    """(run id, eta) of every run_action message waiting in the `actions` queue, oldest first."""
    return [(message.args[0], message.eta) for message in queued_tasks(broker, "actions", task="actions.run_action")]


def due_runs(timer: Timer) -> list[ActionRun]:
    return list(
        ActionRun.objects.filter(timer=timer, status=RunStatus.PENDING, next_attempt_at__isnull=False).order_by(
            "next_attempt_at", "escalation_level", "position"
        )
    )


def execute_next(timer: Timer) -> ActionRun | None:
    """Execute the earliest scheduled run of ``timer`` as if its backoff had elapsed."""
    runs = due_runs(timer)
    if not runs:
        return None
    run = runs[0]
    # Travel in time instead of sleeping through the backoff.
    ActionRun.objects.filter(pk=run.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert run_execute(run_id=run.pk) is True
    run.refresh_from_db()
    return run


def drive(timer: Timer, *, max_steps: int = 50) -> Timer:
    """Execute scheduled runs until none is left; return the refreshed timer."""
    for _ in range(max_steps):
        if execute_next(timer) is None:
            break
    else:
        raise AssertionError("runs still scheduled after max_steps executions")
    timer.refresh_from_db()
    return timer


def webhook(action_id: str, url: str, **parameters: Any) -> dict[str, Any]:
    return {"id": action_id, "kind": "webhook", "parameters": {"url": url, **parameters}}


def make_tls_files(directory: Path, hostname: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for ``hostname``: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "MINOOTS test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@dataclass(frozen=True)
class NoParams:
    """The typed parameters of a test runner that takes none."""

    def to_json(self) -> dict[str, Any]:
        return {}


@contextmanager
def tcp_server(handler: type[socketserver.BaseRequestHandler]) -> Iterator[int]:
    """A threaded TCP server on loopback speaking whatever ``handler`` writes (a receiver that
    misbehaves below HTTP); yields its port, shut down afterwards."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
