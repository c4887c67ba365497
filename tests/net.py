"""Local ports for test servers and processes."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (bound to port 0, then released).

    Another process could take it before the caller binds it; tests accept that small window.
    Connecting to it is refused until someone listens.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
