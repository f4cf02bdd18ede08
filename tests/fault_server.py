"""An HTTP server on 127.0.0.1 that serves small files and misbehaves on request.

Each path has a queue of behaviours consumed one per request; when the queue is
empty the file is served normally (with Range support, as the real mirrors do):

- ``"drop:N"``: announce the full length, send N bytes, close the connection;
- ``"status:503"``: answer with that HTTP status;
- ``"stall:S"``: sleep S seconds before answering (the client should time out);
- ``"corrupt"``: serve the same length with the bytes flipped.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, deque[str]] = defaultdict(deque)
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                fault = server.faults[self.path].popleft() if server.faults[self.path] else "ok"
                if fault.startswith("status:"):
                    self.send_error(int(fault.split(":")[1]))
                    return
                if fault.startswith("stall:"):
                    time.sleep(float(fault.split(":")[1]))
                    return
                if fault == "corrupt":
                    body = bytes(b ^ 0xFF for b in body)
                start = 0
                range_header = self.headers.get("Range")
                if range_header and range_header.startswith("bytes="):
                    start = int(range_header[6:].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if fault.startswith("drop:"):
                    self.wfile.write(payload[: int(fault.split(":")[1])])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, path: str, body: bytes, faults: list[str] | None = None) -> str:
        self.files[path] = body
        self.faults[path].extend(faults or [])
        return self.url + path

    def __enter__(self) -> "FaultServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
