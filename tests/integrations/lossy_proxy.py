"""A loopback HTTP proxy that loses answers: for the first ``lose`` requests it forwards the
request to the server, waits for the server's whole answer (so whatever the request did is
done) and then resets the client's connection instead of passing the answer on. Later requests
go through unchanged. It records every request head it saw.

One request per connection: it asks both sides for ``Connection: close``.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit


def _read_message(sock: socket.socket) -> bytes:
    """One HTTP/1.1 message with a Content-Length body (all MINOOTS and httpx send here)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _close_head(message: bytes) -> bytes:
    head, _, body = message.partition(b"\r\n\r\n")
    lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body


@dataclass
class LossyProxy:
    upstream: str  # http://127.0.0.1:port
    lose: int = 1
    heads: list[str] = field(default_factory=list)
    lost: int = 0

    def __post_init__(self) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        target = urlsplit(self.upstream)
        self._target = (target.hostname or "127.0.0.1", target.port or 80)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            request = _read_message(conn)
            if not request:
                return
            self.heads.append(request.partition(b"\r\n\r\n")[0].decode("latin-1"))
            with socket.create_connection(self._target, timeout=10) as up:
                up.sendall(_close_head(request))
                answer = _read_message(up)
            if self.lost < self.lose:
                self.lost += 1
                # The answer was complete at the server; the client gets a reset instead.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            conn.sendall(_close_head(answer))

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=2)
