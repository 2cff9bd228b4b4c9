"""`mlflow ui` on a store, and headless Chromium (Debian's `chromium` package) to look at it.

`MlflowUi(backend_uri, artifact_root, log_dir).start()` runs the `mlflow ui` command runner
prints, on a free loopback port, in its own process group. `Chromium(root).start()` launches
the browser (own process group, fresh profile under root, DevTools on a free loopback port,
host names other than 127.0.0.1/localhost unresolvable) and drives it over the DevTools
protocol, whose websocket is spoken with aiohttp's client (a dependency of MLflow):
`open(url)` loads a page, `wait(js)` polls a JavaScript expression until it is truthy,
`evaluate(js)` returns its value, `screenshot(path)` writes a PNG of the viewport.
`stop()` ends either process group (Chromium's crash handler, in a group of its own, exits
with the browser).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from tests.support.servers import free_port

INSTALL_HINT = "Chromium is not installed: apt-get install -y chromium (Debian's package)"


def chromium_path() -> Optional[str]:
    return shutil.which("chromium")


class BrowserError(RuntimeError):
    pass


def _stop_group(proc: Optional[subprocess.Popen]) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


class MlflowUi:
    """`mlflow ui --backend-store-uri ... --default-artifact-root ...` on 127.0.0.1, one worker."""

    def __init__(self, backend_uri: str, artifact_root: str, log_dir: Path):
        self.backend_uri, self.artifact_root = backend_uri, artifact_root
        self.log_path = Path(log_dir) / "mlflow-ui.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 120) -> MlflowUi:
        import requests

        args = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", self.backend_uri]
        args += ["--default-artifact-root", self.artifact_root, "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--workers", "1"]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BrowserError(f"mlflow ui did not come up:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        _stop_group(self.proc)
        self.proc = None

    def __enter__(self) -> MlflowUi:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Chromium:
    def __init__(self, root: Path, width: int = 1600, height: int = 1000):
        self.root = Path(root)
        self.width, self.height = width, height
        self.proc: Optional[subprocess.Popen] = None
        self.loop = asyncio.new_event_loop()
        self._session: Any = None
        self._ws: Any = None
        self._ids = itertools.count(1)

    # process -----------------------------------------------------------------

    def start(self, timeout: float = 30) -> Chromium:
        exe = chromium_path()
        if exe is None:
            raise BrowserError(INSTALL_HINT)
        profile = self.root / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        port_file = profile / "DevToolsActivePort"  # Chromium writes its DevTools port here
        port_file.unlink(missing_ok=True)  # a previous browser's
        args = [
            exe,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-pings",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
            f"--user-data-dir={profile}",
            f"--window-size={self.width},{self.height}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
        ]
        log = open(self.root / "chromium.log", "ab")
        with log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.root / "chromium.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise BrowserError(f"chromium did not start its DevTools endpoint:\n{tail}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        try:
            self.loop.run_until_complete(self._connect(port, deadline))
        except BaseException:
            self.stop()
            raise
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        return self

    async def _connect(self, port: int, deadline: float) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession()
        while True:
            try:
                async with self._session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                    pages = [t for t in await resp.json() if t.get("type") == "page"]
                if pages:
                    break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise BrowserError("chromium's DevTools endpoint lists no page")
            await asyncio.sleep(0.1)
        self._ws = await self._session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)

    def stop(self) -> None:
        if self._session is not None:
            try:
                if self._ws is not None:
                    self.loop.run_until_complete(self._ws.close())
            except Exception:  # the browser went first
                pass
            self.loop.run_until_complete(self._session.close())
            self._session = self._ws = None
        _stop_group(self.proc)
        self.proc = None
        if not self.loop.is_closed():
            self.loop.close()

    def __enter__(self) -> Chromium:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # protocol ----------------------------------------------------------------

    def send(self, method: str, timeout: float = 30, **params: Any) -> dict:
        """One DevTools command; its result (events that arrive meanwhile are dropped)."""
        return self.loop.run_until_complete(asyncio.wait_for(self._send(method, params), timeout))

    async def _send(self, method: str, params: dict) -> dict:
        n = next(self._ids)
        await self._ws.send_str(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads(await self._ws.receive_str())
            if msg.get("id") == n:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg["result"]

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 60, what: str = "") -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except BrowserError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                text = self.evaluate("document.body ? document.body.innerText : ''") or ""
                raise BrowserError(f"not seen within {timeout:.0f}s: {what or expression}\npage text:\n{text[:2000]}")
            time.sleep(0.25)

    def text(self) -> str:
        return self.evaluate("document.body.innerText") or ""

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)
