"""A local OpenAI-compatible embeddings server for the tests: the bundled model behind
``POST /v1/embeddings``, with faults on request: 429 with Retry-After, 5xx, answers slower than
the client waits, and a 400 for any input holding ``POISON``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from embedding_assets.config import DEFAULT_MODEL
from embedding_assets.embed.embedder import SentenceTransformerEmbedder

POISON = "POISON"


@dataclass
class Script:
    """What the server answers, request by request: the first of ``faults`` for each request while
    any are left (``ok``, ``429:<seconds>``, ``500``, ``503``, ``slow:<seconds>``), then ``then``."""

    faults: list[str] = field(default_factory=list)
    then: str = "ok"
    requests: list[tuple[float, int]] = field(default_factory=list)  # (time, inputs) of each
    tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self, inputs: int) -> str:
        with self._lock:
            self.requests.append((time.monotonic(), inputs))
            return self.faults.pop(0) if self.faults else self.then


def _handler(script: Script, embedder: SentenceTransformerEmbedder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
            action = script.next(len(inputs))
            if action.startswith("slow:"):
                time.sleep(float(action.split(":")[1]))
            elif action.startswith("429:"):
                return self._answer(429, {"error": "rate limited"}, {"Retry-After": action.split(":")[1]})
            elif action in ("500", "502", "503"):
                return self._answer(int(action), {"error": "upstream failure"})
            if any(POISON in text for text in inputs):
                return self._answer(400, {"error": {"message": "input rejected by the content filter"}})
            vectors = embedder.encode(inputs)
            tokens = sum(len(t.split()) for t in inputs)
            script.tokens += tokens
            data = [
                {"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)
            ]
            return self._answer(200, {"object": "list", "data": data, "model": request["model"],
                                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})  # fmt: skip

    return Handler


@contextmanager
def embeddings_server(script: Script) -> Iterator[str]:
    """The server on a free loopback port: its base URL (``http://127.0.0.1:<port>/v1``)."""
    embedder = SentenceTransformerEmbedder(DEFAULT_MODEL, device="cpu")
    embedder.encode(["warm up"])  # loaded before the first request, which a client may time
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script, embedder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
