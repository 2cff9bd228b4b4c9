"""`mlflow ui` on a store, and headless Chromium (Debian's `chromium` package) to look at it.

`MlflowUi(backend_uri, artifact_root, log_dir).start()` runs the `mlflow ui` command runner
prints, on a free loopback port, in its own process group. `Chromium(root).start()` launches
the browser (own process group, fresh profile under root, DevTools on a free loopback port,
host names other than 127.0.0.1/localhost unresolvable) and drives it over the DevTools
protocol, whose websocket is spoken with aiohttp's client (a dependency of MLflow):
`open(url)` loads a page, `wait(js)` polls a JavaScript expression until it is truthy,
`evaluate(js)` returns its value, `click_text(text)` clicks an element by its text as a
mouse does (`click_until(text, js)` until js is truthy), `frame_evaluate(iframe, js)` /
`frame_wait(iframe, js)` do what evaluate / wait do, in the document of the page's iframe
element `iframe` (a CSS selector; an out-of-process frame too, such as the sandboxed iframe of
MLflow's artifact viewer), `screenshot(path)` writes a PNG of the viewport.
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
HTML_VIEWER = "iframe.mlflow-html-iframe"  # MLflow 3.x's artifact viewer, on an HTML file


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

    def open_html_artifact(self, browser: Chromium, experiment_id: str, run_id: str, path: str) -> str:
        """Open a run's HTML artifact as a user does: the run's page (Model training mode), tab
        Artifacts, each folder of path, the file. MLflow 3.x's viewer shows it in an iframe,
        sandbox="allow-scripts", src a blob: URL of the file's text (a new one at each render of
        the viewer): that iframe's selector, for browser.frame_evaluate / frame_wait."""
        browser.open(f"{self.url}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning")
        tab = "(document.querySelector('[role=tab][aria-selected=true]') || {}).innerText === 'Artifacts'"
        browser.click_until("Artifacts", tab, "[role=tab]", what="the run's Artifacts tab selected")
        node = '[data-testid="artifact-tree-node"]'
        names = path.split("/")
        for name, inside in zip(names[:-1], names[1:], strict=True):  # each folder, until what is inside shows
            shown = f"!!document.querySelector('{node}[artifact-name={json.dumps(inside)}]')"
            browser.click_until(name, shown, node, what=f"{inside} in the folder {name}")
        title = f"document.body.innerText.split('\\n').some(line => line.trim() === {json.dumps(path)})"
        browser.click_until(names[-1], title, node, what=f"the artifact viewer's title {path}")
        blob = f"((document.querySelector('{HTML_VIEWER}') || {{}}).src || '').startsWith('blob:')"
        browser.wait(blob, what=f"the HTML viewer's iframe for {path}")
        return HTML_VIEWER

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

    def send(self, method: str, timeout: float = 30, session: Optional[str] = None, **params: Any) -> dict:
        """One DevTools command, to the page or to an attached target's session; its result
        (events that arrive meanwhile are dropped)."""
        return self.loop.run_until_complete(asyncio.wait_for(self._send(method, params, session), timeout))

    async def _send(self, method: str, params: dict, session: Optional[str] = None) -> dict:
        n = next(self._ids)
        message = {"id": n, "method": method, "params": params, **({"sessionId": session} if session else {})}
        await self._ws.send_str(json.dumps(message))
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
        return self._value(result, expression)

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

    def click_text(self, text: str, selector: str = "*", timeout: float = 30) -> None:
        """Click, as a mouse does (pressed and released at its centre), the first visible element
        matching selector whose text is text (the innermost, if such elements nest)."""
        find = f"""(() => {{
          const want = {json.dumps(text)};
          let hits = [...document.querySelectorAll({json.dumps(selector)})].filter(e =>
            (e.innerText || '').trim() === want && e.getClientRects().length > 0);
          hits = hits.filter(e => !hits.some(o => o !== e && e.contains(o)));
          if (!hits.length) return null;
          hits[0].scrollIntoView({{block: 'center'}});
          const r = hits[0].getBoundingClientRect();
          return {{x: r.left + r.width / 2, y: r.top + r.height / 2}};
        }})()"""
        at = self.wait(find, timeout, what=f"an element {selector} with the text {text!r}")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=at["x"], y=at["y"], button="left", clickCount=1)

    def click_until(self, text: str, expression: str, selector: str = "*", timeout: float = 60, what: str = "") -> Any:
        """click_text(text, selector) until a JavaScript expression is truthy; its value. A click
        the page was not ready for, or that a moving layout sent elsewhere, is repeated (every
        10 s: a slow effect can see a second click)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except BrowserError:
                value = None
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                return self.wait(expression, 0, what=f"{what or expression} (clicking {text!r})")
            self.click_text(text, selector, timeout=left)
            try:
                return self.wait(expression, min(10, max(deadline - time.monotonic(), 0)), what)
            except BrowserError:
                continue

    def _value(self, result: dict, expression: str) -> Any:
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def frame_evaluate(self, iframe: str, expression: str) -> Any:
        """The value of a JavaScript expression in the document of the page's iframe element
        `iframe` (a CSS selector), found by its src. A frame in another process (Chromium
        isolates sandboxed iframes) is a target of its own: attached for the call; a frame in
        the page's process gets an isolated world."""
        url = self.evaluate(f"(document.querySelector({json.dumps(iframe)}) || {{}}).src")
        if not url:
            raise BrowserError(f"no iframe {iframe} with a src")
        args = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        for target in self.send("Target.getTargets")["targetInfos"]:
            if target["type"] == "iframe" and target["url"] == url:
                session = self.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]
                try:
                    return self._value(self.send("Runtime.evaluate", session=session, **args), expression)
                finally:
                    self.send("Target.detachFromTarget", sessionId=session)

        def frames(tree: dict) -> list:
            return [tree["frame"], *(f for child in tree.get("childFrames", []) for f in frames(child))]

        for frame in frames(self.send("Page.getFrameTree")["frameTree"])[1:]:
            if frame.get("url") == url:
                world = self.send("Page.createIsolatedWorld", frameId=frame["id"])["executionContextId"]
                return self._value(self.send("Runtime.evaluate", contextId=world, **args), expression)
        raise BrowserError(f"no frame {url} (the iframe {iframe})")

    def frame_wait(self, iframe: str, expression: str, timeout: float = 60, what: str = "") -> Any:
        """Poll a JavaScript expression in the iframe's document until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.frame_evaluate(iframe, expression)
            except BrowserError as e:
                value, error = None, str(e)
            else:
                error = f"last value {value!r}"
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(
                    f"not seen within {timeout:.0f}s in the iframe {iframe}: {what or expression}\n{error}"
                )
            time.sleep(0.25)

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)
