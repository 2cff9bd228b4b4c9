"""runner-server's tracking server: `mlflow server` on 127.0.0.1 behind a counting proxy.

MlflowServer starts `mlflow server --workers 1` with a SQLite store in its own process
group and stops it by signalling the group. CountingProxy is a plain HTTP/1.1 reverse
proxy on 127.0.0.1 (standard library only) that forwards every request unchanged to the
server and records (method, path, body) of each one, so the benchmark can count the
requests and tell which of them name a trial's run (`count_requests`).
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional, Tuple


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` with a SQLite store and served artifacts, on a free loopback port."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 120) -> MlflowServer:
        log_path = self.root / "server.log"
        args = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root}/mlflow.db",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--artifacts-destination",
            str(self.root / "artifacts"),
        ]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {self.proc.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"mlflow server not up after {timeout:.0f}s:\n{log_path.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        self.proc = None


# RFC 7230 hop-by-hop headers are not forwarded; the proxy sets Host and Content-Length itself.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
_REQUEST_SKIP = _HOP_BY_HOP | {"host", "content-length"}
_RESPONSE_SKIP = _HOP_BY_HOP | {"content-length", "server", "date"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy: CountingProxy):
        self.proxy = proxy
        self.conns: set = set()
        self.conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address):
        with self.conns_lock:
            self.conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.conns_lock:
            self.conns.discard(request)
        super().shutdown_request(request)

    def close_client_connections(self) -> None:
        # Idle keep-alive connections are served by threads that outlive serve_forever().
        with self.conns_lock:
            conns = list(self.conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the MLflow client's session uses it
    timeout = 120
    server: _Server
    upstream: Optional[http.client.HTTPConnection] = None  # one per client connection

    def log_message(self, format, *args):  # noqa: A002
        pass

    def finish(self):
        try:
            super().finish()
        finally:
            if self.upstream is not None:
                self.upstream.close()
                self.upstream = None

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline(65537).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        proxy.record(
            self.command, urllib.parse.urlsplit(self.path).path, self.headers.get("Content-Encoding") or "", body
        )
        head_length = None
        try:
            status, headers, payload, head_length = self._forward(body)
        except (OSError, http.client.HTTPException) as exc:
            status, headers = 502, [("Content-Type", "application/json")]
            payload = json.dumps({"error_code": "BAD_GATEWAY", "message": f"upstream error: {exc!r}"}).encode()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        bodiless = status in (204, 304) or 100 <= status < 200
        if self.command == "HEAD" and head_length is not None:
            self.send_header("Content-Length", head_length)
        elif not bodiless:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and not bodiless and self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()

    def _forward(self, body: bytes) -> Tuple[int, List[Tuple[str, str]], bytes, Optional[str]]:
        proxy = self.server.proxy
        headers: Dict[str, str] = {}
        for name, value in self.headers.items():
            if name.lower() not in _REQUEST_SKIP:
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        headers["Host"] = f"{proxy.host}:{proxy.port}"
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        for attempt in (0, 1):
            reused = self.upstream is not None
            if self.upstream is None:
                self.upstream = http.client.HTTPConnection(proxy.host, proxy.port, timeout=60)
            conn = self.upstream
            try:
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                self.upstream = None
                if reused and attempt == 0:
                    continue  # a stale keep-alive connection to the server: retry once
                raise
            except Exception:
                conn.close()
                self.upstream = None
                raise
            if resp.will_close:
                conn.close()
                self.upstream = None
            headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _RESPONSE_SKIP]
            return resp.status, headers, payload, resp.getheader("Content-Length")
        raise AssertionError("unreachable")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class CountingProxy:
    """Forwards HTTP to `upstream` (http://127.0.0.1:port) and records every request."""

    def __init__(self, upstream: str):
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost") or parts.path.strip("/"):
            raise ValueError(f"upstream must be http://127.0.0.1:<port>, got {upstream!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self._lock = threading.Lock()
        self._bodies: List[Tuple[str, str, bytes]] = []
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> CountingProxy:
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="counting-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.close_client_connections()
            server.server_close()
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def record(self, method: str, path: str, encoding: str, body: bytes) -> None:
        if "gzip" in encoding.lower() and body:
            try:
                body = gzip.decompress(body)
            except OSError:
                pass
        with self._lock:
            self._bodies.append((method, path, body))

    @property
    def bodies(self) -> List[Tuple[str, str, bytes]]:
        """(method, path without query, body) of every request forwarded since the last reset."""
        with self._lock:
            return list(self._bodies)

    def reset_counts(self) -> None:
        with self._lock:
            self._bodies.clear()


def count_requests(bodies: List[Tuple[str, str, bytes]]) -> Tuple[int, int, Dict[str, int]]:
    """(total, requests of the trials' (child) runs, count per endpoint, most first).

    A trial run is one created with an mlflow.parentRunId tag; its later requests name it
    by run_id/run_uuid in their JSON body, up to the update that ends it (status FINISHED,
    KILLED or FAILED). Requests naming a trial run after that (the end-of-sweep summary:
    the best trial's dataset input and tags) and requests naming a parent run are not
    counted as the trial's.
    """
    parents, per_endpoint = set(), {}
    decoded = []
    for method, path, body in bodies:
        endpoint = f"{method} {re.sub(r'^/api/2.0/mlflow(-artifacts)?/', '', path)}"
        if "/artifacts/" in path:
            endpoint = f"{method} artifacts"
        per_endpoint[endpoint] = per_endpoint.get(endpoint, 0) + 1
        try:
            payload = json.loads(body) if body and method != "PUT" else {}
        except ValueError:
            payload = {}
        decoded.append((path, payload if isinstance(payload, dict) else {}))
        for tag in (payload.get("tags") or []) if isinstance(payload, dict) else []:
            if isinstance(tag, dict) and tag.get("key") == "mlflow.parentRunId":
                parents.add(tag.get("value"))
    trial_requests, ended = 0, set()
    for path, payload in decoded:
        tags = payload.get("tags") or []
        if path.endswith("/runs/create"):
            trial_requests += any(isinstance(t, dict) and t.get("key") == "mlflow.parentRunId" for t in tags)
            continue
        run_id = payload.get("run_id") or payload.get("run_uuid")
        if run_id and run_id not in parents and run_id not in ended:
            trial_requests += 1
            if path.endswith("/runs/update") and payload.get("status") in ("FINISHED", "KILLED", "FAILED"):
                ended.add(run_id)
    return len(bodies), trial_requests, dict(sorted(per_endpoint.items(), key=lambda kv: -kv[1]))
