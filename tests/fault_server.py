"""An HTTP server on 127.0.0.1 that serves small files and misbehaves on request.

Each path has a queue of behaviours consumed one per request; when the queue is
empty the file is served normally (with Range support, as the real mirrors do):

- ``"drop:N"``: announce the full length, send N bytes, close the connection;
- ``"status:503"``: answer with that HTTP status;
- ``"stall:S"``: sleep S seconds before answering (the client should time out);
- ``"corrupt"``: serve the same length with the bytes flipped;
- ``"nolength"``: a close-delimited body with no Content-Length; ``"nolength-cut:N"``: its first N bytes;
- ``"badrange:N"``: answer a Range request with a 206 whose Content-Range starts at byte N;
- ``"redirect:URL"``: a 302 to URL; ``"redirect-host:NAME"``: a 302 to the same path and port on
  host NAME (``localhost`` is another origin than ``127.0.0.1``);
- ``"trickle:S"``: send the body one 1 KiB piece every S seconds;
- ``"html"``: a 200 HTML error page (a CDN's or a login page) instead of the file;
- ``"partial206"``: a 206 with the first half of the file, whatever the request asked;
- ``"partial200"``: a 200 with the first half of the file and a Content-Range saying so;
- ``"gzip"``: the body gzip-compressed for the transfer (``Content-Encoding: gzip``);
- ``"longer:N"``: announce ``Content-Length: N`` but send the whole body;
- ``"changed"``: the file changes on the server (its bytes reversed) before this answer.

Every file has a strong ETag (its sha256) and a Last-Modified, unless it was added with
``validators=False`` (mirrors that send neither); ``If-Range`` is honoured unless
``honour_if_range`` is False (some mirrors ignore it). ``requests`` holds (path, Range) of
each request and ``headers`` all its headers.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
import time
import urllib.parse
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HTML_ERROR = (
    b"<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head><body>Try later</body></html>\n"
)


class FaultServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, deque[str]] = defaultdict(deque)
        self.requests: list[tuple[str, str | None]] = []
        self.headers: list[dict[str, str]] = []
        self.honour_if_range = True
        self.last_modified: dict[str, str] = {}
        self.no_validators: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = urllib.parse.urlsplit(self.path).path
                server.requests.append((path, self.headers.get("Range")))
                server.headers.append(dict(self.headers.items()))
                body = server.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                fault = server.faults[path].popleft() if server.faults[path] else "ok"
                if fault.startswith("status:"):
                    self.send_error(int(fault.split(":")[1]))
                    return
                if fault.startswith("stall:"):
                    time.sleep(float(fault.split(":")[1]))
                    return
                if fault.startswith(("redirect:", "redirect-host:")):
                    kind, target = fault.split(":", 1)
                    if kind == "redirect-host":
                        target = f"http://{target}:{server.httpd.server_address[1]}{self.path}"
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault == "changed":
                    body = server.files[path] = body[::-1]
                    server.last_modified[path] = "Wed, 02 Dec 2026 00:00:00 GMT"
                if fault == "html":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(HTML_ERROR)))
                    self.end_headers()
                    self.wfile.write(HTML_ERROR)
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
                start, length, encoding = 0, None, None
                range_header = self.headers.get("Range")
                if_range = self.headers.get("If-Range")
                if range_header and if_range and server.honour_if_range and if_range != etag:
                    range_header = None  # the file changed: RFC 9110 says send it whole
                if fault in ("partial206", "partial200"):
                    half = len(body) // 2
                    self.send_response(206 if fault == "partial206" else 200)
                    self.send_header("Content-Range", f"bytes 0-{half - 1}/{len(body)}")
                    body = body[:half]
                elif range_header and range_header.startswith("bytes="):
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
                if fault == "gzip":
                    payload, encoding = gzip.compress(payload, mtime=0), "gzip"
                if fault.startswith("longer:"):
                    length = int(fault.split(":")[1])
                self.send_header("Content-Length", str(len(payload) if length is None else length))
                if encoding:
                    self.send_header("Content-Encoding", encoding)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Accept-Ranges", "bytes")
                if path not in server.no_validators:
                    self.send_header("ETag", etag)
                    self.send_header("Last-Modified", server.last_modified.get(path, "Tue, 01 Dec 2026 00:00:00 GMT"))
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

    def add(self, path: str, body: bytes, faults: list[str] | None = None, validators: bool = True) -> str:
        self.files[path] = body
        self.faults[path].extend(faults or [])
        if not validators:
            self.no_validators.add(path)
        return self.url + path

    def __enter__(self) -> "FaultServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
