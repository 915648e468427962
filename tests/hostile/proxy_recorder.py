"""A proxy.py plugin that writes down every request the proxy forwards, one line each
("GET 127.0.0.1:5000/path"), to the file named by HTTPAY_PROXY_RECORD. proxy.py's own access log
has one line per connection, which hides the requests that reuse it."""

from __future__ import annotations

import os
import threading

from proxy.http.parser import HttpParser
from proxy.http.proxy import HttpProxyBasePlugin

_lock = threading.Lock()


class RecordingPlugin(HttpProxyBasePlugin):
    def handle_client_request(self, request: HttpParser) -> HttpParser | None:
        method = (request.method or b"?").decode("latin-1")
        host = (request.host or b"?").decode("latin-1")
        path = (request.path or b"/").decode("latin-1")
        with _lock, open(os.environ["HTTPAY_PROXY_RECORD"], "a", encoding="utf-8") as f:
            f.write(f"{method} {host}:{request.port}{path}\n")
            f.flush()
        return request
