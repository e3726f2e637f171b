"""A real HTTP server on 127.0.0.1 that tests script: it answers the replies set per path
(the last one repeats) and records every request it received."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None
    """A dict or list is sent as JSON; text as text/plain; None as an empty body."""
    delay_s: float = 0.0
    content_type: str | None = None


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpPeer:
    replies: dict[str, list[Reply]] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reply(self, path: str, *replies: Reply) -> None:
        """Answer `path` with these replies in turn; the last one repeats."""
        with self.lock:
            self.replies[path] = list(replies)

    def received(self, path: str) -> list[Received]:
        with self.lock:
            return [request for request in self.requests if request.path == path]

    def _next(self, path: str) -> Reply:
        with self.lock:
            queue = self.replies.get(path)
            if not queue:
                return Reply(404, {"error": f"no reply scripted for {path}"})
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def _record(self, request: Received) -> None:
        with self.lock:
            self.requests.append(request)


def _handler(peer: HttpPeer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            peer._record(Received(self.command, parts.path, parts.query, headers, body))
            reply = peer._next(parts.path)
            if reply.delay_s:
                time.sleep(reply.delay_s)
            if isinstance(reply.body, dict | list):
                payload, content_type = json.dumps(reply.body).encode(), "application/json"
            elif reply.body is None:
                payload, content_type = b"", "text/plain"
            else:
                payload, content_type = str(reply.body).encode(), "text/plain"
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type or content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("X-Peer", "test")
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the caller gave up (a timeout test)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read `peer.requests` instead."""

    return Handler


@contextmanager
def http_peer() -> Iterator[HttpPeer]:
    peer = HttpPeer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(peer))
    server.daemon_threads = True
    peer.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="http-peer", daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        server.shutdown()
        server.server_close()
