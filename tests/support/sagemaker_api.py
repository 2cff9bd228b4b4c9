"""Local stand-in for SageMaker's own API (the control plane boto3's "sagemaker" client talks to).

``SageMakerApi`` serves AWS JSON 1.1 on 127.0.0.1 (``POST /``, ``X-Amz-Target:
SageMaker.<Operation>``, a JSON body) and knows two operations,
``CreatePresignedMlflowTrackingServerUrl`` and ``CreatePresignedMlflowAppUrl``. Every request
must carry a valid SigV4 signature for service ``sagemaker`` in the given region (checked with
the verifier of tests/support/sigv4_proxy.py); a bad one is answered 400
``InvalidSignatureException``. ``answer`` picks what a good request gets: ``"url"`` (an
``AuthorizedUrl`` on this server, recorded in ``issued``), ``"deny"`` (400
``AccessDeniedException``) or ``"hang"`` (no answer for ``hang_seconds``).

boto3 sends a "sagemaker" client here when ``AWS_ENDPOINT_URL_SAGEMAKER`` is this server's URL
(``env()``); the sagemaker-mlflow plugin's tracking requests do not use that variable.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.sigv4_proxy import Rejected, Verifier

__all__ = ["SageMakerApi"]

JSON_11 = "application/x-amz-json-1.1"
OPERATIONS = ("CreatePresignedMlflowTrackingServerUrl", "CreatePresignedMlflowAppUrl")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, api: SageMakerApi):
        self.api = api
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - keep stderr quiet
        pass

    def _answer(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", JSON_11)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, kind: str, message: str) -> None:
        self._answer(status, {"__type": kind, "message": message})

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        api = self.server.api
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        target = self.headers.get("X-Amz-Target") or ""
        try:
            api._verifier.verify("POST", self.path, self.headers, body)
        except Rejected as exc:
            api._record(api._rejected, (target, str(exc)))
            self._error(400, "InvalidSignatureException", str(exc))
            return
        if self.path != "/" or (self.headers.get("Content-Type") or "") != JSON_11:
            self._error(400, "SerializationException", f"expected POST / with {JSON_11}")
            return
        service, _, operation = target.partition(".")
        if service != "SageMaker" or operation not in OPERATIONS:
            self._error(400, "UnknownOperationException", f"unknown operation {target!r}")
            return
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            self._error(400, "SerializationException", "the body is not JSON")
            return
        api._record(api._calls, (operation, request))
        if api.answer == "hang":
            time.sleep(api.hang_seconds)
            return
        if api.answer == "deny":
            self._error(
                400,
                "AccessDeniedException",
                f"User: arn:aws:iam::123456789012:user/test is not authorized to perform: sagemaker:{operation}",
            )
            return
        url = f"{api.url}/auth?authToken=presigned-{uuid.uuid4().hex}"
        api._record(api._issued, url)
        self._answer(200, {"AuthorizedUrl": url})

    do_GET = do_PUT = do_DELETE = do_POST


class SageMakerApi:
    """SageMaker's presigned-UI-URL operations on 127.0.0.1, SigV4-checked (service ``sagemaker``)."""

    def __init__(self, *, access_key: str, secret_key: str, region: str = "us-east-1", hang_seconds: float = 10.0):
        self._verifier = Verifier(
            access_key=access_key, secret_key=secret_key, region=region, service="sagemaker", arn=None
        )
        self.answer = "url"
        self.hang_seconds = hang_seconds
        self._lock = threading.Lock()
        self._calls: list[tuple[str, dict]] = []
        self._rejected: list[tuple[str, str]] = []
        self._issued: list[str] = []
        self._server: _Server | None = None

    def start(self) -> SageMakerApi:
        self._server = _Server(self)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> SageMakerApi:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> dict:
        """What sends boto3's "sagemaker" client (only it) here."""
        return {"AWS_ENDPOINT_URL_SAGEMAKER": self.url}

    def reset(self, answer: str = "url") -> None:
        with self._lock:
            self.answer = answer
            self._calls.clear()
            self._rejected.clear()
            self._issued.clear()

    def _record(self, into: list, item: Any) -> None:
        with self._lock:
            into.append(item)

    @property
    def calls(self) -> list[tuple[str, dict]]:
        """(operation, request body) of each well-signed request."""
        with self._lock:
            return list(self._calls)

    @property
    def rejected(self) -> list[tuple[str, str]]:
        """(X-Amz-Target, reason) of each request refused for its signature."""
        with self._lock:
            return list(self._rejected)

    @property
    def issued(self) -> list[str]:
        """The AuthorizedUrls handed out."""
        with self._lock:
            return list(self._issued)
