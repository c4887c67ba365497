"""A fake Slack on 127.0.0.1 speaking the real protocol: the Web API methods MINOOTS calls
(``chat.postMessage``, ``chat.update``) under ``/api/``, and ``response_url`` endpoints under
``/hooks/``. It records every call and answers like Slack does: HTTP 200 with
``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``, and 429 with ``Retry-After``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def method(self) -> str:
        return self.path.removeprefix("/api/")


@dataclass
class Answer:
    """One scripted answer: ``error`` (an ok:false error), ``status`` 429 with ``retry_after``,
    or ``hang`` seconds before answering."""

    error: str | None = None
    status: int = 200
    retry_after: int | None = None
    hang: float = 0.0


@dataclass
class FakeSlack:
    token: str = "xoxb-test-token"
    calls: list[Call] = field(default_factory=list)
    _scripts: dict[str, list[Answer]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ts: int = 0

    def start(self) -> FakeSlack:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                if "json" in (self.headers.get("Content-Type") or ""):
                    body = json.loads(raw or "{}")
                else:
                    body = dict(parse_qsl(raw))
                status, headers, payload = fake._answer(Call(self.path, dict(self.headers.items()), body))
                data = payload.encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/api/"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def response_url(self, name: str = "r1") -> str:
        return f"{self.url}/hooks/commands/T1/{name}"

    def script(self, path: str, *answers: Answer) -> None:
        """Answers for ``path`` ("chat.postMessage" for the Web API, or a /hooks/ path)."""
        with self._lock:
            self._scripts.setdefault(path, []).extend(answers)

    def at(self, path: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.path == path or c.method == path]

    def _answer(self, call: Call) -> tuple[int, dict[str, str], str]:
        key = call.method if call.path.startswith("/api/") else call.path
        with self._lock:
            self.calls.append(call)
            script = self._scripts.get(key)
            answer = script.pop(0) if script else Answer()
            self._ts += 1
            ts = f"{int(time.time())}.{self._ts:06d}"
        if answer.hang:
            time.sleep(answer.hang)
        json_type = {"Content-Type": "application/json; charset=utf-8"}
        if answer.status == 429:
            headers = {**json_type, "Retry-After": str(answer.retry_after or 1)}
            if call.path.startswith("/hooks/"):
                return 429, headers, "rate limited"
            return 429, headers, json.dumps({"ok": False, "error": "ratelimited"})
        if call.path.startswith("/hooks/"):  # response_url: plain text "ok", or an error text
            if answer.error:
                return 404, {"Content-Type": "text/plain"}, answer.error
            return 200, {"Content-Type": "text/plain"}, "ok"
        if call.headers.get("Authorization") != f"Bearer {self.token}":
            return 200, json_type, json.dumps({"ok": False, "error": "invalid_auth"})
        if answer.error:
            return 200, json_type, json.dumps({"ok": False, "error": answer.error})
        channel = call.body.get("channel", "")
        return (
            200,
            json_type,
            json.dumps(
                {
                    "ok": True,
                    "channel": channel,
                    "ts": call.body.get("ts") or ts,
                    "message": {"text": call.body.get("text")},
                }
            ),
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
