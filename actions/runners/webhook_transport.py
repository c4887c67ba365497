"""How webhook attempts reach the network: aiohttp on one event loop per worker process.

Every attempt of the process goes through one ``aiohttp.ClientSession`` on one event loop,
run by a daemon thread (started on first use, and again in a forked child). Connections are
pooled per host and kept alive between attempts, and many attempts are in flight at once
without a thread each: a batch of first attempts (``actions.batch``) hands all its webhooks to
the loop together, a single attempt waits for its own (``deliver``).

The safety rules hold per attempt, whatever the concurrency:

- *Pinned addresses.* The attempt resolves the host itself and checks every address
  (``webhook.refused_addresses``) before anything is sent. The session's resolver then answers
  the connector with exactly those checked addresses, never with a lookup of its own, so a DNS
  answer that changes between the check and the connect (DNS rebinding) cannot redirect the
  request. A kept-alive connection was made to an address checked when it was opened.
- *A hard deadline.* ``timeoutMs`` bounds the whole attempt (lookup, connect, TLS handshake,
  request, status line, headers, body) as one ``asyncio.timeout``: a receiver dripping any of
  them is hung up on when it passes, and the connection is closed, not reused.
- *Bounded answers.* At most RESPONSE_CAP bytes of the body are read (the connection is then
  closed); status line and header lines are bounded by the parser's limits.
- *Nothing from the environment or from earlier receivers.* No proxies (``trust_env`` off), no
  cookies (a cookie one tenant's receiver sets never travels with another's webhook), no
  redirects followed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import socket
import ssl
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import certifi
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

T = TypeVar("T")

# Connections of the process's session: in all, and to one host (scheme, host, port).
CONNECTIONS = int(os.environ.get("MINOOTS_WEBHOOK_CONNECTIONS", "512"))
# Of those, attempts of one tenant at most: a tenant flooding a receiver that never answers
# cannot hold every slot of the process while another tenant's webhooks wait.
CONNECTIONS_PER_TENANT = int(os.environ.get("MINOOTS_WEBHOOK_CONNECTIONS_PER_TENANT", "128"))
CONNECTIONS_PER_HOST = int(os.environ.get("MINOOTS_WEBHOOK_CONNECTIONS_PER_HOST", "256"))
# Longest status line or header line read from a receiver.
MAX_LINE = 8190


class PinnedResolver(AbstractResolver):
    """Answers the connector with the addresses the attempt checked for (host, port).

    ``pin`` is called by the attempt after its own lookup and check, just before the request;
    the connector asks only when it opens a new connection. A host nobody pinned resolves to
    nothing (the connection fails) rather than to a lookup of the resolver's own."""

    def __init__(self) -> None:
        self._pinned: dict[tuple[str, int], list[str]] = {}

    def pin(self, host: str, port: int, addresses: list[str]) -> None:
        if len(self._pinned) >= 10_000 and (host, port) not in self._pinned:
            self._pinned.clear()  # only the attempts in flight need theirs; each pins again
        self._pinned[(host, port)] = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = self._pinned.get((host, port))
        if not addresses:
            raise OSError(f"no checked address for {host}:{port}")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        self._pinned.clear()


class FreshConnector(aiohttp.TCPConnector):
    """aiohttp's connector, lending a kept-alive connection only if nothing arrived on it while
    it sat idle: bytes a receiver sends between requests (a stray second reply, a 408 on idle)
    would otherwise be read as the next request's answer, one tenant's reply recorded for
    another's webhook. Such a connection is closed instead (urllib3 dropped them the same way)."""

    async def _get(self, key: Any, traces: list[Any]) -> Any:
        conns = self._conns.get(key)
        if conns:
            stale = [entry for entry in conns if entry[0].should_close]
            for entry in stale:
                conns.remove(entry)
                entry[0].close()
            if not conns:
                del self._conns[key]
        return await super()._get(key, traces)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes  # at most the cap
    truncated: bool  # there was more (not read)
    retry_after: str | None
    location: str


class Transport:
    """The event loop thread and its session (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None
        self._tenant_slots: dict[str, asyncio.Semaphore] = {}
        self.resolver = PinnedResolver()
        self._contexts: dict[bool | str, ssl.SSLContext] = {}

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                # A forked child inherits no threads: a parent's loop is not this process's.
                self._pid = os.getpid()
                self._session = None
                self._slots = None
                self._tenant_slots = {}
                self.resolver = PinnedResolver()
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="webhook-loop", daemon=True).start()
                self._loop = loop
            return self._loop

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coroutine`` on the loop; its result (or exception) through the future."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop())

    def submit_many(self, coroutines: Sequence[Coroutine[Any, Any, T]]) -> list[concurrent.futures.Future[T]]:
        """Run every coroutine on the loop, started together by one call into it (not one per
        coroutine); a future each. Cancelling a future cancels its coroutine."""
        futures: list[concurrent.futures.Future[T]] = [concurrent.futures.Future() for _ in coroutines]
        loop = self.loop()

        def start() -> None:
            for coroutine, future in zip(coroutines, futures, strict=True):
                task = loop.create_task(coroutine)
                task.add_done_callback(functools.partial(_settle, future))
                # The waiting side giving up stops the attempt too: it must not send later.
                future.add_done_callback(functools.partial(_cancel_if_cancelled, loop, task))

        loop.call_soon_threadsafe(start)
        return futures

    def slots(self) -> asyncio.Semaphore:
        """Attempts in flight in this process at most (call on the loop)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(CONNECTIONS)
        return self._slots

    def tenant_slots(self, tenant_id: str) -> asyncio.Semaphore:
        """Attempts of ``tenant_id`` in flight in this process at most (call on the loop)."""
        slots = self._tenant_slots.get(tenant_id)
        if slots is None:
            if len(self._tenant_slots) >= 10_000:
                # Drop the idle ones (nobody holds or waits for them).
                self._tenant_slots = {t: sem for t, sem in self._tenant_slots.items() if sem.locked()}
            slots = self._tenant_slots[tenant_id] = asyncio.Semaphore(CONNECTIONS_PER_TENANT)
        return slots

    def session(self) -> aiohttp.ClientSession:
        """The session (call on the loop)."""
        if self._session is None or self._session.closed:
            connector = FreshConnector(
                limit=CONNECTIONS,
                limit_per_host=CONNECTIONS_PER_HOST,
                resolver=self.resolver,
                use_dns_cache=False,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None),
                max_line_size=MAX_LINE,
                max_field_size=MAX_LINE,
            )
            # One request per attempt: aiohttp would otherwise send an idempotent method (PUT,
            # DELETE, GET) a second time when a kept-alive connection turns out closed.
            self._session._retry_connection = False
        return self._session

    def tls_context(self, ca_bundle: bool | str) -> ssl.SSLContext:
        """Certificates verified against ``ca_bundle`` (True: certifi's, as requests uses)."""
        context = self._contexts.get(ca_bundle)
        if context is None:
            context = ssl.create_default_context(cafile=certifi.where() if ca_bundle is True else str(ca_bundle))
            self._contexts[ca_bundle] = context
        return context


def _cancel_if_cancelled(
    loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], future: concurrent.futures.Future[Any]
) -> None:
    if future.cancelled():
        loop.call_soon_threadsafe(task.cancel)


def _settle(future: concurrent.futures.Future[T], task: asyncio.Task[T]) -> None:
    if not future.set_running_or_notify_cancel():
        return  # cancelled by the waiting side: nobody wants the result
    if task.cancelled():
        future.set_exception(TimeoutError("the attempt was cancelled"))
    elif task.exception() is not None:
        future.set_exception(task.exception())
    else:
        future.set_result(task.result())


TRANSPORT = Transport()


async def send(
    *,
    method: str,
    url: str | URL,
    host: str,
    port: int,
    addresses: list[str],
    headers: dict[str, str],
    payload: bytes | None,
    ssl_context: ssl.SSLContext | None,
    cap: int,
) -> Answer:
    """One request to the checked ``addresses`` of ``host``: its status and at most ``cap``
    bytes of its body. The caller bounds it with the attempt's deadline."""
    TRANSPORT.resolver.pin(host, port, addresses)
    session = TRANSPORT.session()
    response = await session.request(
        method,
        url,
        data=payload,
        headers=headers,
        allow_redirects=False,
        ssl=ssl_context if ssl_context is not None else True,
    )
    try:
        if response.status == 101:
            raise aiohttp.ClientResponseError(
                response.request_info, (), status=101, message="101 Switching Protocols, which was not asked for"
            )
        chunks: list[bytes] = []
        size = 0
        truncated = False
        while True:
            try:
                chunk = await response.content.read(cap + 1 - size)
            except aiohttp.ClientPayloadError:
                # The status and headers came; the body was cut short (the receiver closed
                # early, a broken chunk): the answer stands, marked truncated, as before.
                truncated = True
                break
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                truncated = True
                break
        body = b"".join(chunks)
    except BaseException:
        response.close()  # a half-read reply must never be taken for the next request's
        raise
    if truncated:
        response.close()
    else:
        response.release()
    return Answer(
        status=response.status,
        body=body[:cap],
        truncated=truncated,
        retry_after=response.headers.get("Retry-After"),
        location=response.headers.get("Location", ""),
    )
