"""A webhook receiver fast enough not to be what a delivery benchmark measures.

``python bench/webhook_receiver.py PORT_FILE ARRIVALS_FILE`` listens on a free loopback port
(written to PORT_FILE once it listens), answers every request ``204 No Content`` on a kept-alive
HTTP/1.1 connection, and appends one line per request to ARRIVALS_FILE: the arrival time (Unix
seconds), the ``webhook-id`` and the ``x-minoots-timer-id`` headers. One asyncio process, a
protocol per connection, no framework: about 20,000 requests/s on one core, so the workers'
delivery rate is what the benchmark sees. Runs until SIGTERM; the file is flushed every 0.1 s
and on exit.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from pathlib import Path
from typing import IO

REPLY = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


class Connection(asyncio.Protocol):
    def __init__(self, out: list[str]) -> None:
        self.out = out
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            headers = {}
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.out.append(
                f"{time.time():.6f} {headers.get('webhook-id', '-')} {headers.get('x-minoots-timer-id', '-')}\n"
            )
            assert self.transport is not None
            self.transport.write(REPLY)


async def serve(port_file: Path, arrivals: IO[str]) -> None:
    loop = asyncio.get_running_loop()
    out: list[str] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = await loop.create_server(lambda: Connection(out), sock=sock, backlog=4096)
    port_file.write_text(str(sock.getsockname()[1]))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 0.1)
            except TimeoutError:
                pass
            if out:
                lines, out[:] = out[:], []
                arrivals.write("".join(lines))
                arrivals.flush()
    finally:
        server.close()
        if out:
            arrivals.write("".join(out))
            arrivals.flush()


def main() -> None:
    port_file, arrivals_path = Path(sys.argv[1]), Path(sys.argv[2])
    with arrivals_path.open("a") as arrivals:
        asyncio.run(serve(port_file, arrivals))


if __name__ == "__main__":
    main()
