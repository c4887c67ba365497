"""``webhook``: one signed HTTP request per attempt.

Safety, in order: http(s) only; the host is resolved once and every address it resolves to
must be public (unless ``MINOOTS_WEBHOOK_ALLOW_PRIVATE``); the connection then goes to the
address that was checked, so a DNS answer that changes between check and connect (DNS
rebinding) cannot redirect it. Redirects are never followed, the response is read up to
64 KiB, and proxies from the environment are ignored.

``timeoutMs`` is a deadline for the whole attempt: requests' timeout bounds each socket
operation only, so a receiver sending its status line, headers or body a byte at a time would
hold an attempt for as long as it likes. Every socket an attempt uses is registered (when it
connects, or when a kept-alive one is reused) with the attempt's ``_Deadline``, and one watchdog
thread shuts those sockets down when the deadline passes; the attempt is then a timeout.
"""

from __future__ import annotations

import heapq
import http.client
import ipaddress
import itertools
import json
import os
import re
import socket
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from standardwebhooks import Webhook
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.connection import HTTPConnection, HTTPSConnection

from actions.errors import ActionError, ParameterError
from actions.runners.base import ActionContext, ActionResult, Runner, is_utf8
from actions.secrets import webhook_secrets_in_force

METHODS = ("POST", "PUT", "PATCH", "GET", "DELETE")
BODY_METHODS = ("POST", "PUT", "PATCH")
# An attempt's hard deadline (the watchdog cuts its connection then); it must stay well inside
# MINOOTS_ACTION_LEASE.
MAX_TIMEOUT_MS = 60_000
RESPONSE_CAP = 64 * 1024
MAX_HEADERS = 50
MAX_INTERIM_RESPONSES = 20  # 1xx responses skipped before the final one
MAX_BODY_BYTES = 1024 * 1024
TRANSIENT_STATUSES = frozenset({408, 425, 429})
# Headers MINOOTS sets itself; a caller may not override them.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-minoots-timer-id",
        "x-minoots-tenant-id",
    }
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain")

# Certificate authorities used to verify HTTPS targets: True means requests' bundle (certifi).
# Tests point this at their own CA.
CA_BUNDLE: bool | str = True

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix: global IPv4 only
# Not global, though Python's tables (3.11) say so: 3fff::/20 is for documentation (RFC 9637).
NON_GLOBAL_V6 = ((ipaddress.IPv6Network("3fff::/20"), "documentation"),)


def address_refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address (e.g. 'loopback'), or None if it is one.

    An IPv6 address that carries an IPv4 one (IPv4-mapped, 6to4, Teredo, NAT64) reaches that
    IPv4 address, so that address is judged too."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in NAT64_PREFIX:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            reason = address_refusal(embedded)
            return None if reason is None else f"{reason} (NAT64 of {embedded})"
        else:
            carried = [("6to4", ip.sixtofour)] if ip.sixtofour is not None else []
            if ip.teredo is not None:
                carried += [("Teredo server", ip.teredo[0]), ("Teredo client", ip.teredo[1])]
            for form, embedded in carried:
                reason = address_refusal(embedded)
                if reason is not None:
                    return f"{reason} ({form} {embedded})"
            for network, reason in NON_GLOBAL_V6:
                if ip in network:
                    return reason
    for attribute in ("is_loopback", "is_link_local", "is_multicast", "is_private", "is_reserved", "is_unspecified"):
        if getattr(ip, attribute):
            return attribute.removeprefix("is_").replace("_", "-")
    if not ip.is_global:
        return "non-public"
    return None


# Lookups run here so that an attempt waits for one no longer than its deadline: getaddrinfo
# has no timeout of its own (the resolver's, 5 s x attempts, is the system's). A lookup that
# outlives its attempt finishes in the background; the pool bounds how many can pile up, and
# once they fill it every further lookup waits in its queue and times out with its attempt
# (DNS is broken then, and the attempts say so).
_LOOKUPS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="webhook-dns")


def resolve_within(host: str, port: int, seconds: float) -> list[IPAddress]:
    """``resolve`` that gives up after ``seconds``: TimeoutError then."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    return _LOOKUPS.submit(resolve, host, port).result(timeout=max(seconds, 0.0))


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, IPAddress] = {}
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(sockaddr[0]).split("%", 1)[0]
        seen.setdefault(address, ipaddress.ip_address(address))
    return list(seen.values())


def refused_addresses(addresses: list[IPAddress]) -> str | None:
    """A message naming the first non-public address, or None when all are public."""
    for ip in addresses:
        reason = address_refusal(ip)
        if reason is not None:
            return (
                f"resolves to {ip}, a {reason} address; private targets are refused "
                "unless MINOOTS_WEBHOOK_ALLOW_PRIVATE=true"
            )
    return None


_local = threading.local()  # per worker thread: its sessions, and the running attempt's deadline


def _cut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: nothing left to interrupt


class _Deadline:
    """One attempt's deadline and the sockets it uses, shut down when the deadline passes.

    Each socket is held through a duplicate of its descriptor: shutting that down ends every
    read and write on the connection (also once TLS has taken over the original socket
    object), and since the duplicate is ours, its number can never meanwhile belong to another
    file. ``close`` (the attempt is over) closes the duplicates, not the connections.
    """

    def __init__(self, at: float) -> None:
        self.at = at
        self.expired = False
        self._handles: list[socket.socket] = []
        self._closed = False
        self._lock = threading.Lock()

    def watch(self, sock: socket.socket) -> None:
        try:
            handle = socket.fromfd(sock.fileno(), sock.family, sock.type)
        except (OSError, ValueError):
            return  # already closed
        with self._lock:
            if self._closed:
                handle.close()
                return
            self._handles.append(handle)
            if self.expired:
                _cut(handle)

    def expire(self) -> None:
        with self._lock:
            if self._closed:
                return
            self.expired = True
            for handle in self._handles:
                _cut(handle)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for handle in self._handles:
                handle.close()
            self._handles.clear()


class _Watchdog:
    """One daemon thread per process expiring deadlines in order (started on first use, and
    again in a forked child, which inherits no threads)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._order = itertools.count()
        self._pid = 0
        self._thread: threading.Thread | None = None

    def add(self, deadline: _Deadline) -> None:
        with self._condition:
            if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
                self._pid = os.getpid()
                self._heap = []  # a parent's deadlines are not this process's to expire
                self._thread = threading.Thread(target=self._run, name="webhook-deadlines", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._heap[0][2] is deadline:
                self._condition.notify()

    def _run(self) -> None:
        with self._condition:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    heapq.heappop(self._heap)[2].expire()
                self._condition.wait(self._heap[0][0] - now if self._heap else None)


_WATCHDOG = _Watchdog()


def _watch(sock: socket.socket | None) -> None:
    """Register ``sock`` with the deadline of the attempt running in this thread, if any."""
    deadline: _Deadline | None = getattr(_local, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.watch(sock)


class _FinalResponse(http.client.HTTPResponse):
    """Skips every interim (1xx) response to reach the final one.

    http.client skips only ``100 Continue``: a ``102 Processing`` or ``103 Early Hints`` would
    be taken as the final status (with an empty body), leaving the real response in the
    kept-alive connection to be read as the answer to the next request. ``101 Switching
    Protocols`` is refused (never asked for: what follows is not HTTP)."""

    def _read_status(self) -> tuple[str, int, str]:
        for _ in range(MAX_INTERIM_RESPONSES + 1):
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if status == 101:
                raise http.client.HTTPException("101 Switching Protocols, which was not asked for")
            if not 100 <= status < 200:
                return version, status, reason
            http.client._read_headers(self.fp)  # type: ignore[attr-defined]
        raise http.client.HTTPException(f"more than {MAX_INTERIM_RESPONSES} interim (1xx) responses")


class _DeadlineHTTPConnection(HTTPConnection):
    response_class = _FinalResponse

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)  # a kept-alive connection, connected during an earlier attempt
        super().request(*args, **kwargs)


class _DeadlineHTTPSConnection(HTTPSConnection):
    response_class = _FinalResponse

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _watch(sock)  # before the TLS handshake, which a receiver could drip too
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)
        super().request(*args, **kwargs)


class _DeadlineHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


class PinnedAddressAdapter(HTTPAdapter):
    """Connects to one pre-checked IP address whatever the URL's host resolves to now.

    The URL keeps its hostname, so the Host header is right; for HTTPS the hostname is
    passed as TLS SNI and as the name the certificate must match. Its connections register
    their sockets with the running attempt's deadline.
    """

    def __init__(self, address: IPAddress) -> None:
        self._address = str(address)
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _DeadlineHTTPConnectionPool,
            "https": _DeadlineHTTPSConnectionPool,
        }

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        # The pool's host is the IP; without this, http.client would send it as the Host.
        request.headers.setdefault("Host", urlsplit(request.url or "").netloc.rpartition("@")[2])
        return super().send(request, *args, **kwargs)

    def get_connection_with_tls_context(
        self, request: requests.PreparedRequest, verify: Any, proxies: Any = None, cert: Any = None
    ) -> HTTPConnectionPool:
        host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        hostname = host_params["host"]
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = hostname  # type: ignore[typeddict-unknown-key]
            pool_kwargs["assert_hostname"] = hostname  # type: ignore[typeddict-unknown-key]
        host_params["host"] = self._address
        pool: HTTPConnectionPool = self.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)
        return pool


SESSIONS_PER_THREAD = 64


def _session_for(address: IPAddress) -> requests.Session:
    """A session pinned to ``address``, kept per worker thread so connections are reused
    (keep-alive) across attempts to the same target. It stores no cookies: a cookie set by
    one tenant's receiver must never travel with another tenant's webhook."""
    sessions: OrderedDict[str, requests.Session] | None = getattr(_local, "sessions", None)
    if sessions is None:
        sessions = _local.sessions = OrderedDict()
    key = str(address)
    session = sessions.pop(key, None)
    if session is None:
        session = requests.Session()
        session.trust_env = False  # no proxies or netrc from the worker's environment
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        adapter = PinnedAddressAdapter(address)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        if len(sessions) >= SESSIONS_PER_THREAD:
            sessions.popitem(last=False)[1].close()
    sessions[key] = session
    return session


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _read_capped(response: requests.Response, deadline: _Deadline) -> tuple[bytes, bool]:
    """Up to RESPONSE_CAP bytes of the body; True if there was more (or the read failed).

    The caller checks ``deadline`` afterwards: a body the watchdog cut short may look complete
    (with ``Connection: close`` it ends at EOF)."""
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(chunk_size=8192):
            chunks.append(chunk)
            size += len(chunk)
            if size > RESPONSE_CAP or time.monotonic() > deadline.at:
                return b"".join(chunks)[:RESPONSE_CAP], True
    except (requests.RequestException, OSError):
        return b"".join(chunks)[:RESPONSE_CAP], True
    return b"".join(chunks), False


def _request_failure(exc: requests.RequestException, *, host: str, timed_out: ActionError) -> ActionError:
    if isinstance(exc, requests.exceptions.SSLError):
        return ActionError(f"TLS error talking to {host}: {exc}", permanent=True)
    if isinstance(exc, requests.Timeout):
        return timed_out
    if isinstance(exc, requests.ConnectionError):
        return ActionError(f"connection to {host} failed: {exc}", permanent=False)
    return ActionError(f"request failed: {exc}", permanent=True)


@dataclass(frozen=True)
class WebhookParams:
    url: str
    host: str  # from ``url``
    port: int  # from ``url``, or the scheme's default
    method: str  # upper case, one of METHODS
    headers: dict[str, str]
    timeout_ms: int
    body: Any = None  # None: not given (a default body for BODY_METHODS); a str is sent as is

    def to_json(self) -> dict[str, Any]:
        normalised: dict[str, Any] = {
            "url": self.url,
            "method": self.method,
            "headers": dict(self.headers),
            "timeoutMs": self.timeout_ms,
        }
        if self.body is not None:
            normalised["body"] = self.body
        return normalised


class WebhookRunner(Runner[WebhookParams]):
    kind = "webhook"

    def parse(self, parameters: dict[str, Any], *, tenant_id: str) -> WebhookParams:
        """Host names are not resolved here (nor at create, inside a web request): an attempt
        resolves, checks and pins the address itself, and that check is the authority. IP
        literals and local names are refused here already."""
        unknown = sorted(set(parameters) - {"url", "method", "headers", "body", "timeoutMs"})
        if unknown:
            raise ParameterError(unknown[0], "unknown parameter; allowed: url, method, headers, body, timeoutMs")
        url = parameters.get("url")
        if not isinstance(url, str) or not url:
            raise ParameterError("url", "is required (an http or https URL)")
        if not is_utf8(url):
            raise ParameterError("url", "must be valid Unicode text")
        if len(url) > 2048:
            raise ParameterError("url", "must be at most 2048 characters")
        try:
            parts = urlsplit(url)
            host = parts.hostname
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise ParameterError("url", f"is not a valid URL: {exc}") from exc
        if parts.scheme not in ("http", "https"):
            raise ParameterError("url", f"must be an http or https URL, not '{parts.scheme or url}'")
        if not host:
            raise ParameterError("url", "has no host")
        if any(ch.isspace() or ord(ch) < 32 for ch in url):
            raise ParameterError("url", "must not contain whitespace or control characters")
        if not settings.MINOOTS_WEBHOOK_ALLOW_PRIVATE:
            self._check_public_host(host)
        method = parameters.get("method", "POST")
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise ParameterError("method", f"must be one of {', '.join(METHODS)}")
        headers = parameters.get("headers") or {}
        if not isinstance(headers, dict):
            raise ParameterError("headers", "must be an object of header names to string values")
        if len(headers) > MAX_HEADERS:
            raise ParameterError("headers", f"at most {MAX_HEADERS} headers")
        for name, value in headers.items():
            if not _HEADER_NAME.match(name):
                raise ParameterError("headers", f"'{name[:40]}' is not a valid header name")
            if name.lower() in RESERVED_HEADERS:
                raise ParameterError("headers", f"'{name}' is set by MINOOTS and cannot be overridden")
            if not isinstance(value, str) or "\r" in value or "\n" in value or "\x00" in value:
                raise ParameterError("headers", f"'{name}' must have a single-line string value")
            if value != value.strip(" \t"):  # refused (or silently trimmed) on the way out
                raise ParameterError("headers", f"'{name}' must not begin or end with whitespace")
            try:
                value.encode("latin-1")
            except UnicodeEncodeError as exc:
                raise ParameterError("headers", f"'{name}' must be ISO-8859-1 text (HTTP header values)") from exc
        timeout_ms = parameters.get("timeoutMs", min(settings.ACTION_WEBHOOK_TIMEOUT_MS, MAX_TIMEOUT_MS))
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or not 1 <= timeout_ms <= MAX_TIMEOUT_MS:
            raise ParameterError("timeoutMs", f"must be an integer between 1 and {MAX_TIMEOUT_MS}")
        body = parameters.get("body")
        if body is not None:
            encoded = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
            if not is_utf8(encoded):
                raise ParameterError("body", "must be valid Unicode text")
            if len(encoded.encode()) > MAX_BODY_BYTES:
                raise ParameterError("body", f"must be at most {MAX_BODY_BYTES // 1024} KiB")
        return WebhookParams(
            url=url,
            host=host,
            port=port,
            method=method.upper(),
            headers=dict(headers),
            timeout_ms=timeout_ms,
            body=body,
        )

    @staticmethod
    def _check_public_host(host: str) -> None:
        lowered = host.lower().rstrip(".")
        if lowered == "localhost" or lowered.endswith(_LOCAL_SUFFIXES):
            raise ParameterError(
                "url",
                f"host '{host}' is a local name; private targets are refused unless MINOOTS_WEBHOOK_ALLOW_PRIVATE=true",
            )
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            try:
                host.encode("idna")  # what getaddrinfo does; '..' or a 64-character label fail
            except UnicodeError as exc:
                raise ParameterError("url", f"'{host[:100]}' is not a valid host name") from exc
            return
        refusal = refused_addresses([literal])
        if refusal is not None:
            raise ParameterError("url", f"host '{host}' {refusal}")

    def attempt(self, params: WebhookParams, context: ActionContext) -> ActionResult:
        url, host, port, method = params.url, params.host, params.port, params.method
        deadline = _Deadline(time.monotonic() + params.timeout_ms / 1000)
        try:
            addresses = resolve_within(host, port, deadline.at - time.monotonic())
        except TimeoutError as exc:
            raise ActionError(f"timed out after {params.timeout_ms} ms (resolving '{host}')", permanent=False) from exc
        except OSError as exc:
            raise ActionError(f"cannot resolve '{host}': {exc}", permanent=False) from exc
        if not addresses:
            raise ActionError(f"'{host}' resolves to no address", permanent=False)
        if not settings.MINOOTS_WEBHOOK_ALLOW_PRIVATE:
            refusal = refused_addresses(addresses)
            if refusal is not None:
                raise ActionError(f"host '{host}' {refusal}", permanent=True)

        headers = CaseInsensitiveDict({"User-Agent": "MINOOTS-Webhook/1"})
        headers.update(params.headers)
        body: Any
        if params.body is not None:
            body = params.body
        elif method in BODY_METHODS:
            body = {"event": "timer.fired", "timer": context.timer}
        else:
            body = None
        if body is None:
            payload = ""
        elif isinstance(body, str):
            payload = body
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        else:
            payload = json.dumps(body, separators=(",", ":"), default=str)
            headers.setdefault("Content-Type", "application/json")
        now = datetime.now(UTC)
        secrets = webhook_secrets_in_force(tenant_id=context.tenant_id)
        headers.update(
            {
                "webhook-id": context.run_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": " ".join(
                    Webhook(secret).sign(msg_id=context.run_id, timestamp=now, data=payload) for secret in secrets.all()
                ),
                "x-minoots-timer-id": context.timer_id,
                "x-minoots-tenant-id": context.tenant_id,
            }
        )
        timed_out = ActionError(f"timed out after {params.timeout_ms} ms", permanent=False)
        timeout = deadline.at - time.monotonic()  # per socket operation; the deadline bounds their sum
        if timeout <= 0:
            raise timed_out
        session = _session_for(addresses[0])
        _local.deadline = deadline
        _WATCHDOG.add(deadline)
        try:
            with session.request(
                method,
                url,
                data=payload.encode() if payload else None,
                headers=headers,
                timeout=(timeout, timeout),
                allow_redirects=False,
                stream=True,
                verify=CA_BUNDLE,
            ) as response:
                raw, truncated = _read_capped(response, deadline)
                status = response.status_code
                retry_after = _retry_after(response.headers.get("Retry-After"))
                location = response.headers.get("Location", "")
            if deadline.expired or time.monotonic() > deadline.at:
                raise timed_out
        except ActionError:
            raise
        except Exception as exc:
            if deadline.expired:  # whatever the cut made of it (EOF, reset, TLS error): a timeout
                raise timed_out from exc
            if not isinstance(exc, requests.RequestException):
                raise
            raise _request_failure(exc, host=host, timed_out=timed_out) from exc
        finally:
            _local.deadline = None
            deadline.close()

        # surrogateescape keeps bytes that are not UTF-8; the recording boundary stores them as \xNN.
        output = raw.decode("utf-8", errors="surrogateescape") + ("\n[truncated]" if truncated else "")
        if 200 <= status < 300:
            return ActionResult(summary=f"HTTP {status}", http_status=status, output=output)
        if 300 <= status < 400:
            raise ActionError(
                f"HTTP {status}: redirect to '{location[:200]}' not followed",
                permanent=True,
                http_status=status,
                output=output,
            )
        transient = status in TRANSIENT_STATUSES or status >= 500
        raise ActionError(
            f"HTTP {status}",
            permanent=not transient,
            retry_after=retry_after if transient else None,
            http_status=status,
            output=output,
        )
