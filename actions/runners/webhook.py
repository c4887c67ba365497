"""``webhook``: one signed HTTP request per attempt.

Safety, in order: http(s) only; the host is resolved once and every address it resolves to
must be public (unless ``MINOOTS_WEBHOOK_ALLOW_PRIVATE``); the connection then goes to the
address that was checked, so a DNS answer that changes between check and connect (DNS
rebinding) cannot redirect it. Redirects are never followed, the response is read up to
64 KiB, and proxies from the environment are ignored.

``timeoutMs`` is a deadline for the whole attempt (lookup, connect, TLS, request, status line,
headers, body), whatever the receiver does. The network part runs on the process's event loop
(``webhook_transport``: aiohttp, connections pooled per host and kept alive), so many attempts
are in flight at once: a batch of first attempts hands all its webhooks over together
(``deliver_async``), a single attempt waits for its own (``attempt``).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import re
import socket
import ssl
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from django.conf import settings
from standardwebhooks import Webhook
from yarl import URL

from actions.errors import ActionError, ParameterError
from actions.runners.base import ActionContext, ActionResult, Runner, is_utf8
from actions.runners.webhook_transport import TRANSPORT, send
from actions.secrets import webhook_secrets_in_force

METHODS = ("POST", "PUT", "PATCH", "GET", "DELETE")
BODY_METHODS = ("POST", "PUT", "PATCH")
# An attempt's hard deadline (the watchdog cuts its connection then); it must stay well inside
# MINOOTS_ACTION_LEASE.
MAX_TIMEOUT_MS = 60_000
RESPONSE_CAP = 64 * 1024
# Longest an attempt waits for one of its worker's connection slots before its deadline starts.
SLOT_WAIT_SECONDS = 60.0
MAX_HEADERS = 50
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

# Certificate authorities used to verify HTTPS targets: True means certifi's bundle.
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
    concurrent = True

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

    def prepare(self, params: WebhookParams, context: ActionContext) -> Delivery:
        """The request of one attempt, signed."""
        headers = {"User-Agent": "MINOOTS-Webhook/1"}
        lowered = {name.lower() for name in params.headers}
        headers = {k: v for k, v in headers.items() if k.lower() not in lowered} | params.headers
        body: Any
        if params.body is not None:
            body = params.body
        elif params.method in BODY_METHODS:
            body = {"event": "timer.fired", "timer": context.timer}
        else:
            body = None
        if body is None:
            payload = ""
        elif isinstance(body, str):
            payload = body
            if "content-type" not in lowered:
                headers["Content-Type"] = "text/plain; charset=utf-8"
        else:
            payload = json.dumps(body, separators=(",", ":"), default=str)
            if "content-type" not in lowered:
                headers["Content-Type"] = "application/json"
        now = datetime.now(UTC)
        secrets = webhook_secrets_in_force(tenant_id=context.tenant_id)
        headers.update(
            {
                "webhook-id": context.run_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": " ".join(
                    _signer(secret).sign(msg_id=context.run_id, timestamp=now, data=payload) for secret in secrets.all()
                ),
                "x-minoots-timer-id": context.timer_id,
                "x-minoots-tenant-id": context.tenant_id,
            }
        )
        return Delivery(
            params=params, headers=headers, payload=payload.encode() if payload else None, tenant_id=context.tenant_id
        )

    def attempt_async(self, params: WebhookParams, context: ActionContext) -> Coroutine[Any, Any, ActionResult]:
        """The attempt for the transport's loop; it ends by itself at its deadline."""
        return deliver_async(self.prepare(params, context))

    def attempt(self, params: WebhookParams, context: ActionContext) -> ActionResult:
        delivery = self.prepare(params, context)
        future = TRANSPORT.submit(deliver_async(delivery))
        try:
            # The coroutine ends itself (slot wait plus deadline); the margin only guards against
            # a loop that stopped running.
            return future.result(timeout=longest_attempt_seconds(params.timeout_ms))
        except FutureTimeout as exc:
            future.cancel()
            raise delivery.timed_out() from exc


@functools.lru_cache(maxsize=1024)
def _signer(secret: str) -> Webhook:
    """A signer per secret (decoding the secret is most of a signature's cost)."""
    return Webhook(secret)


@dataclass(frozen=True)
class Delivery:
    """One attempt ready to go: the signed request."""

    params: WebhookParams
    headers: dict[str, str]
    payload: bytes | None
    tenant_id: str

    def timed_out(self, suffix: str = "") -> ActionError:
        return ActionError(f"timed out after {self.params.timeout_ms} ms{suffix}", permanent=False)


def longest_attempt_seconds(timeout_ms: int = MAX_TIMEOUT_MS) -> float:
    """The longest an attempt can take from its hand-over to the loop: waiting for one of the
    process's connection slots, then its deadline, plus a margin."""
    return SLOT_WAIT_SECONDS + timeout_ms / 1000 + 5.0


async def deliver_async(delivery: Delivery) -> ActionResult:
    """Send one attempt (on the transport's loop) and judge the answer; ActionError on failure.

    The attempt first takes one of the process's MINOOTS_WEBHOOK_CONNECTIONS slots: a burst
    waits here, in the worker, and ``timeoutMs`` starts once it has one, so a deadline measures
    the receiver, never the worker's own queue. A slot not free within SLOT_WAIT_SECONDS is a
    transient failure before anything was sent (retried, no duplicate)."""
    params = delivery.params
    host, port = params.host, params.port
    tenant_slots, slots = TRANSPORT.tenant_slots(delivery.tenant_id), TRANSPORT.slots()
    held: list[asyncio.Semaphore] = []
    try:
        try:
            if not tenant_slots.locked() and not slots.locked():
                # Both free: acquire() returns without suspending, so no deadline to arm (an
                # asyncio.timeout per attempt is a timer handle scheduled and cancelled).
                for semaphore in (tenant_slots, slots):
                    await semaphore.acquire()
                    held.append(semaphore)
            else:
                async with asyncio.timeout(SLOT_WAIT_SECONDS):
                    for semaphore in (tenant_slots, slots):
                        await semaphore.acquire()
                        held.append(semaphore)
        except TimeoutError as exc:
            raise ActionError(
                f"no connection slot of this worker free within {SLOT_WAIT_SECONDS:g} s "
                "(MINOOTS_WEBHOOK_CONNECTIONS, MINOOTS_WEBHOOK_CONNECTIONS_PER_TENANT)",
                permanent=False,
            ) from exc
        resolved = False
        try:
            async with asyncio.timeout(params.timeout_ms / 1000):
                addresses = await _lookup(host, port)
                resolved = True
                answer = await _send(delivery, addresses)
        except TimeoutError as exc:
            raise delivery.timed_out("" if resolved else f" (resolving '{host}')") from exc
    finally:
        for semaphore in held:
            semaphore.release()
    # surrogateescape keeps bytes that are not UTF-8; the recording boundary stores them as \xNN.
    output = answer.body.decode("utf-8", errors="surrogateescape") + ("\n[truncated]" if answer.truncated else "")
    status = answer.status
    if 200 <= status < 300:
        return ActionResult(summary=f"HTTP {status}", http_status=status, output=output)
    if 300 <= status < 400:
        raise ActionError(
            f"HTTP {status}: redirect to '{answer.location[:200]}' not followed",
            permanent=True,
            http_status=status,
            output=output,
        )
    transient = status in TRANSIENT_STATUSES or status >= 500
    raise ActionError(
        f"HTTP {status}",
        permanent=not transient,
        retry_after=_retry_after(answer.retry_after) if transient else None,
        http_status=status,
        output=output,
    )


async def _lookup(host: str, port: int) -> list[IPAddress]:
    """The host's addresses, every one of them checked (unless private targets are allowed)."""
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = await asyncio.get_running_loop().run_in_executor(_LOOKUPS, resolve, host, port)
        except TimeoutError:
            raise
        except OSError as exc:
            raise ActionError(f"cannot resolve '{host}': {exc}", permanent=False) from exc
    if not addresses:
        raise ActionError(f"'{host}' resolves to no address", permanent=False)
    if not settings.MINOOTS_WEBHOOK_ALLOW_PRIVATE:
        refusal = refused_addresses(addresses)
        if refusal is not None:
            raise ActionError(f"host '{host}' {refusal}", permanent=True)
    return addresses


async def _send(delivery: Delivery, addresses: list[IPAddress]) -> Any:
    params = delivery.params
    # The host as aiohttp will ask the resolver for it (IDNA-encoded: 'xn--bcher-kva.example');
    # the parsed URL is what aiohttp gets, so it does not parse the text again.
    url = URL(params.url)
    connect_host = url.raw_host or params.host
    try:
        literal: IPAddress | None = ipaddress.ip_address(connect_host)
    except ValueError:
        literal = None
    if literal is not None and literal not in addresses:
        # A host aiohttp reads as an IP literal (it connects to it without asking the resolver)
        # that was not the address checked: never connect.
        raise ActionError(f"host '{params.host}' is read as {literal}, which was not checked", permanent=True)
    try:
        return await send(
            method=params.method,
            url=url,
            host=connect_host,
            port=params.port,
            addresses=[str(addresses[0])],
            headers=delivery.headers,
            payload=delivery.payload,
            ssl_context=TRANSPORT.tls_context(CA_BUNDLE) if params.url.lower().startswith("https:") else None,
            cap=RESPONSE_CAP,
        )
    except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
        raise ActionError(f"TLS error talking to {params.host}: {exc}", permanent=True) from exc
    except TimeoutError:
        raise
    except (aiohttp.ClientError, OSError) as exc:
        raise ActionError(f"connection to {params.host} failed: {exc}", permanent=False) from exc
