"""Local stand-in for the front door of Amazon SageMaker managed MLflow.

``Sigv4Proxy`` is a small reverse proxy on 127.0.0.1 that sits in front of a real
``mlflow server`` (also on loopback).  With ``verify=True`` every request must carry
a valid AWS Signature Version 4 ``Authorization`` header, as produced by the
``sagemaker-mlflow`` plugin (botocore ``SigV4Auth``); the proxy recomputes the
canonical request and the signature itself and answers 403 with an AWS-style JSON
body when anything is wrong.  Rejected requests are never forwarded.  With
``verify=False`` it only forwards and counts requests.

Only the standard library is used for serving and forwarding; botocore is used only
for its URI path normalisation helper (``normalize_url_path``), exactly as botocore
uses it when signing.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import http.client
import json
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterable

from botocore.utils import normalize_url_path

__all__ = ["Rejected", "Sigv4Proxy", "Verifier"]

ALGORITHM = "AWS4-HMAC-SHA256"
ARN_HEADER = "x-mlflow-sm-tracking-server-arn"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_CLOCK_SKEW = _dt.timedelta(minutes=15)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# RFC 7230 hop-by-hop headers: never forwarded in either direction.
_HOP_BY_HOP = frozenset(
    {
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
)
# Request headers the proxy sets itself when talking to the upstream.
_REQUEST_SKIP = _HOP_BY_HOP | {"host", "content-length"}
# Response headers the proxy sets itself (BaseHTTPRequestHandler adds Server/Date).
_RESPONSE_SKIP = _HOP_BY_HOP | {"content-length", "server", "date"}


class Rejected(Exception):
    """Raised by the verifier; ``str(exc)`` is the reason sent to the client."""


# --------------------------------------------------------------------------- #
# SigV4 verification
# --------------------------------------------------------------------------- #


def _parse_authorization(value: str) -> tuple[str, list[str], str]:
    """Split ``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise Rejected(f"unsupported Authorization algorithm {algorithm!r} (expected {ALGORITHM})")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if not sep:
            raise Rejected(f"malformed Authorization header component {part.strip()!r}")
        fields[key.strip()] = val.strip()
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if not fields.get(k)]
    if missing:
        raise Rejected(f"malformed Authorization header: missing {', '.join(missing)}")
    signed_headers = fields["SignedHeaders"].split(";")
    if any(h != h.strip().lower() or not h for h in signed_headers):
        raise Rejected("malformed Authorization header: SignedHeaders must be lower-case names")
    if signed_headers != sorted(signed_headers):
        raise Rejected("malformed Authorization header: SignedHeaders not sorted")
    return fields["Credential"], signed_headers, fields["Signature"]


def _canonical_uri(raw_path: str) -> str:
    # Same as botocore.auth.SigV4Auth._normalize_url_path: remove dot segments and
    # duplicate slashes, then URI-encode the (already encoded) path once more.
    return urllib.parse.quote(normalize_url_path(raw_path), safe="/~")


def _canonical_query(raw_query: str) -> str:
    """Canonical query string as the service computes it.

    Each name and value is decoded and re-encoded with the SigV4 rules (only
    ``A-Za-z0-9-_.~`` unescaped, space as ``%20``), then the pairs are sorted by
    encoded name, then value -- i.e. what botocore computes for ``params=`` and what
    it computes from a URL whose query is already in canonical form.  A literal
    ``+`` in the wire query is therefore *not* the same as what botocore signed when
    it signed the raw URL; this is why the sagemaker-mlflow plugin rewrites ``+``
    to ``%20`` in GET/DELETE URLs before signing.
    """
    if not raw_query:
        return ""
    pairs = []
    for item in raw_query.split("&"):
        key, _, value = item.partition("=")
        pairs.append(
            (
                urllib.parse.quote(urllib.parse.unquote_plus(key), safe="-_.~"),
                urllib.parse.quote(urllib.parse.unquote_plus(value), safe="-_.~"),
            )
        )
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _canonical_header_value(values: Iterable[str]) -> str:
    # Trimall each value, join repeated headers with commas (botocore behaviour).
    return ",".join(" ".join(v.split()) for v in values)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def _signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    k_date = _hmac(f"AWS4{secret_key}".encode(), date)
    k_region = _hmac(k_date, region)
    k_service = _hmac(k_region, service)
    return _hmac(k_service, "aws4_request")


class Verifier:
    """Checks a request's SigV4 signature for one key pair, region and service (and, with
    ``arn``, the tracking-server ARN header): what the proxy and tests/support/sagemaker_api.py use."""

    def __init__(self, *, access_key: str, secret_key: str, region: str, service: str, arn: str | None):
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.service = service
        self.arn = arn

    def verify(self, method: str, target: str, headers, body: bytes) -> None:  # noqa: C901 - one check per SigV4 rule
        """Raise ``Rejected`` unless the request carries a valid SigV4 signature.

        ``headers`` is an ``email.message.Message`` (as in BaseHTTPRequestHandler),
        ``target`` the raw request target (path and query exactly as received).
        """
        auth_values = headers.get_all("Authorization") or []
        if not auth_values:
            raise Rejected("missing Authorization header")
        if len(auth_values) > 1:
            raise Rejected("more than one Authorization header")
        credential, signed_headers, signature = _parse_authorization(auth_values[0])

        # Credential = AKID/yyyymmdd/region/service/aws4_request
        scope = credential.split("/")
        if len(scope) != 5:
            raise Rejected(f"malformed credential {credential!r}")
        access_key, scope_date, region, service, terminator = scope
        if access_key != self.access_key:
            raise Rejected(f"unknown access key {access_key!r}")
        if terminator != "aws4_request":
            raise Rejected(f"credential scope terminator {terminator!r} != 'aws4_request'")
        if region != self.region:
            raise Rejected(f"credential scope region {region} != {self.region}")
        if service != self.service:
            raise Rejected(f"credential scope service {service} != {self.service}")

        # Mandatory signed headers.
        for required in ("host", "x-amz-date"):
            if required not in signed_headers:
                raise Rejected(f"header {required!r} is not signed")
        if self.arn is not None and ARN_HEADER not in signed_headers:
            raise Rejected(f"header {ARN_HEADER!r} is not signed")
        for name in signed_headers:
            if not headers.get_all(name):
                raise Rejected(f"signed header {name!r} missing from request")

        # Request time.
        amz_date = _canonical_header_value(headers.get_all("x-amz-date"))
        try:
            when = _dt.datetime.strptime(amz_date, AMZ_DATE_FORMAT).replace(tzinfo=_dt.timezone.utc)
        except ValueError:
            raise Rejected(f"malformed x-amz-date {amz_date!r}") from None
        skew = abs(_dt.datetime.now(_dt.timezone.utc) - when)
        if skew > MAX_CLOCK_SKEW:
            raise Rejected(f"x-amz-date {amz_date} is {int(skew.total_seconds())} s away from server time (max 900 s)")
        if scope_date != amz_date[:8]:
            raise Rejected(f"credential scope date {scope_date} != x-amz-date date {amz_date[:8]}")

        # Tracking-server ARN routing header.
        if self.arn is not None:
            arn_value = headers.get(ARN_HEADER)
            if arn_value != self.arn:
                raise Rejected(f"{ARN_HEADER} {arn_value!r} != {self.arn!r}")

        # Payload: always hash what was received; never trust X-Amz-Content-SHA256.
        body_hash = hashlib.sha256(body).hexdigest()
        claimed = headers.get_all("x-amz-content-sha256")
        if claimed is not None:
            if len(claimed) != 1 or claimed[0].strip() != body_hash:
                raise Rejected(
                    f"body hash mismatch: x-amz-content-sha256 {claimed[0].strip()!r} "
                    f"!= sha256 of received body {body_hash}"
                )

        # Canonical request -> string to sign -> signature.
        parts = urllib.parse.urlsplit(target)
        canonical_headers = "".join(
            f"{name}:{_canonical_header_value(headers.get_all(name))}\n" for name in signed_headers
        )
        canonical_request = "\n".join(
            [
                method.upper(),
                _canonical_uri(parts.path),
                _canonical_query(parts.query),
                canonical_headers,
                ";".join(signed_headers),
                body_hash,
            ]
        )
        string_to_sign = "\n".join(
            [
                ALGORITHM,
                amz_date,
                f"{scope_date}/{region}/{service}/aws4_request",
                hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
            ]
        )
        key = _signing_key(self.secret_key, scope_date, region, service)
        expected = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise Rejected("signature mismatch")


# --------------------------------------------------------------------------- #
# HTTP plumbing
# --------------------------------------------------------------------------- #


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, proxy: Sigv4Proxy):
        self.proxy = proxy
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(addr, handler)

    def process_request(self, request, client_address):
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_client_connections(self) -> None:
        # Idle keep-alive connections are served by threads that outlive
        # serve_forever(); shut their sockets so they stop answering.
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # idle keep-alive connections are dropped after this
    server: _Server

    # one upstream connection per client connection (= per handler thread)
    _upstream_conn: http.client.HTTPConnection | None = None

    def log_message(self, format, *args):  # noqa: A002 - silence stderr logging
        pass

    def finish(self):
        try:
            super().finish()
        finally:
            if self._upstream_conn is not None:
                self._upstream_conn.close()
                self._upstream_conn = None

    def _read_body(self) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until blank line
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes, head_length: str | None = None) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        no_body = self.command == "HEAD" or status in (204, 304) or 100 <= status < 200
        if self.command == "HEAD" and head_length is not None:
            self.send_header("Content-Length", head_length)
        elif not (status in (204, 304) or 100 <= status < 200):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not no_body and body:
            self.wfile.write(body)
        self.wfile.flush()

    def _send_json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode("utf-8")
        self._send(status, [("Content-Type", "application/json")], body)

    def _handle(self) -> None:
        proxy = self.server.proxy
        try:
            body = self._read_body()
        except (ValueError, OSError) as exc:
            self.close_connection = True
            self._send_json(400, {"error_code": "BAD_REQUEST", "message": f"unreadable body: {exc}"})
            return
        path_only = urllib.parse.urlsplit(self.path).path

        if proxy._verifier is not None:
            try:
                proxy._verifier.verify(self.command, self.path, self.headers, body)
            except Rejected as exc:
                proxy._record_rejected(self.command, path_only, str(exc))
                self._send_json(403, {"error_code": "PERMISSION_DENIED", "message": str(exc)})
                return
        elif proxy.require_auth is not None:
            given = self.headers.get_all("Authorization") or []
            if given != [proxy.require_auth]:
                reason = "missing Authorization header" if not given else "bad credentials"
                proxy._record_rejected(self.command, path_only, reason)
                self._send_json(401, {"error_code": "UNAUTHENTICATED", "message": reason})
                return

        proxy._record_forwarded(self.command, path_only)
        if proxy.record_bodies:
            proxy._record_body(self.command, path_only, self.headers.get("Content-Encoding") or "", body)
        try:
            status, headers, resp_body, upstream_length = self._forward(body)
        except (OSError, http.client.HTTPException) as exc:
            self._send_json(502, {"error_code": "BAD_GATEWAY", "message": f"upstream error: {exc!r}"})
            return
        self._send(status, headers, resp_body, head_length=upstream_length)

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes, str | None]:
        proxy = self.server.proxy
        fwd_headers: dict[str, str] = {}
        for name, value in self.headers.items():
            lname = name.lower()
            if lname in _REQUEST_SKIP:
                continue
            if lname == "authorization" and (proxy.verify or proxy.require_auth is not None):
                continue  # the front door terminates authentication
            fwd_headers[name] = f"{fwd_headers[name]}, {value}" if name in fwd_headers else value
        fwd_headers["Host"] = proxy._upstream_netloc
        if body or self.command in ("POST", "PUT", "PATCH"):
            fwd_headers["Content-Length"] = str(len(body))
        target = proxy._upstream_prefix + self.path

        for attempt in (0, 1):
            reused = self._upstream_conn is not None
            if self._upstream_conn is None:
                self._upstream_conn = http.client.HTTPConnection(
                    proxy._upstream_host, proxy._upstream_port, timeout=proxy.upstream_timeout
                )
            conn = self._upstream_conn
            try:
                conn.request(self.command, target, body=body if body else None, headers=fwd_headers)
                resp = conn.getresponse()
                resp_body = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                self._upstream_conn = None
                if reused and attempt == 0:
                    continue  # stale keep-alive connection to the upstream: retry once
                raise
            except Exception:
                conn.close()
                self._upstream_conn = None
                raise
            if resp.will_close:
                conn.close()
                self._upstream_conn = None
            headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _RESPONSE_SKIP]
            return resp.status, headers, resp_body, resp.getheader("Content-Length")
        raise AssertionError("unreachable")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class Sigv4Proxy:
    """SigV4-verifying (or merely counting) reverse proxy in front of ``upstream``.

    ``requests`` lists ``(method, path)`` of forwarded requests (path without the
    query string); ``rejected`` lists ``(method, path, reason)`` of requests answered
    403 (401 with ``require_auth``) and not forwarded.  Both are snapshots taken under a lock.
    """

    def __init__(
        self,
        upstream: str,
        *,
        verify: bool = True,
        access_key: str = "AKIDEXAMPLE",
        secret_key: str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        region: str = "us-east-1",
        service: str = "sagemaker-mlflow",
        arn: str | None = None,
        port: int = 0,
        upstream_timeout: float = 60.0,
        require_auth: str | None = None,
        record_bodies: bool = False,
    ):
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port or 80
        self._upstream_netloc = parts.netloc
        self._upstream_prefix = parts.path.rstrip("/")
        self.verify = verify
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.service = service
        self.arn = arn
        self.upstream_timeout = upstream_timeout
        # verify=False only: the exact Authorization header every request must carry
        # (e.g. "Basic dTpw" or "Bearer tok"), like a basic-auth/token front door of an
        # MLflow server; others get 401 and are not forwarded.
        self.require_auth = require_auth
        # Keep each forwarded request's body (decoded from gzip), e.g. to see the SQL a
        # Snowflake connector sends to a fakesnow server behind this proxy.
        self.record_bodies = record_bodies
        self._bodies: list[tuple[str, str, bytes]] = []
        self._port = port
        self._verifier = (
            Verifier(access_key=access_key, secret_key=secret_key, region=region, service=service, arn=arn)
            if verify
            else None
        )
        self._lock = threading.Lock()
        self._requests: list[tuple[str, str]] = []
        self._rejected: list[tuple[str, str, str]] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------- #

    def start(self) -> Sigv4Proxy:
        if self._server is not None:
            raise RuntimeError("proxy already started")
        self._server = _Server(("127.0.0.1", self._port), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="sigv4-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.close_client_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Sigv4Proxy:
        return self.start() if self._server is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- introspection ------------------------------------------------------ #

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("proxy not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._requests)

    @property
    def rejected(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return list(self._rejected)

    @property
    def bodies(self) -> list[tuple[str, str, bytes]]:
        """``(method, path, body)`` of forwarded requests when ``record_bodies`` is on."""
        with self._lock:
            return list(self._bodies)

    def reset_counts(self) -> None:
        with self._lock:
            self._requests.clear()
            self._rejected.clear()
            self._bodies.clear()

    def _record_body(self, method: str, path: str, encoding: str, body: bytes) -> None:
        if "gzip" in encoding.lower() and body:
            import gzip

            try:
                body = gzip.decompress(body)
            except OSError:
                pass
        with self._lock:
            self._bodies.append((method, path, body))

    def _record_forwarded(self, method: str, path: str) -> None:
        with self._lock:
            self._requests.append((method, path))

    def _record_rejected(self, method: str, path: str, reason: str) -> None:
        with self._lock:
            self._rejected.append((method, path, reason))

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "not started"
        return f"Sigv4Proxy({self.upstream!r}, verify={self.verify}, {where})"
