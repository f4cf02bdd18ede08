"""An HTTP server on 127.0.0.1 that serves small files and misbehaves on request.

Each path has a queue of behaviours consumed one per request; when the queue is
empty the file is served normally (with Range support, as the real mirrors do):

- ``"drop:N"``: announce the full length, send N bytes, close the connection;
- ``"status:503"``: answer with that HTTP status;
- ``"stall:S"``: sleep S seconds before answering (the client should time out);
- ``"corrupt"``: serve the same length with the bytes flipped;
- ``"nolength"``: a close-delimited body with no Content-Length; ``"nolength-cut:N"``: its first N bytes;
- ``"badrange:N"``: answer a Range request with a 206 whose Content-Range starts at byte N;
- ``"redirect:URL"``: a 302 to URL;
- ``"trickle:S"``: send the body one 1 KiB piece every S seconds.

Every file has a strong ETag (its sha256) and a Last-Modified; ``If-Range`` is honoured
unless ``honour_if_range`` is False (some mirrors ignore it).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, deque[str]] = defaultdict(deque)
        self.requests: list[tuple[str, str | None]] = []
        self.honour_if_range = True
        self.last_modified: dict[str, str] = {}
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
                if fault.startswith("redirect:"):
                    self.send_response(302)
                    self.send_header("Location", fault.split(":", 1)[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                if fault == "corrupt":
                    body = bytes(b ^ 0xFF for b in body)
                if fault.startswith("nolength"):
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(body[: int(fault.split(":")[1])] if ":" in fault else body)
                    self.close_connection = True
                    return
                start = 0
                range_header = self.headers.get("Range")
                if_range = self.headers.get("If-Range")
                if range_header and if_range and server.honour_if_range and if_range != etag:
                    range_header = None  # the file changed: RFC 9110 says send it whole
                if range_header and range_header.startswith("bytes="):
                    start = int(range_header[6:].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    if fault.startswith("badrange:"):
                        start = int(fault.split(":")[1])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", etag)
                self.send_header("Last-Modified", server.last_modified.get(self.path, "Tue, 01 Dec 2026 00:00:00 GMT"))
                self.end_headers()
                if fault.startswith("trickle:"):
                    for offset in range(0, len(payload), 1024):
                        self.wfile.write(payload[offset : offset + 1024])
                        self.wfile.flush()
                        time.sleep(float(fault.split(":")[1]))
                    return
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
