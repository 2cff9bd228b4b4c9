"""An older `mlflow server` in a virtual environment of its own, as SageMaker runs one.

SageMaker managed MLflow runs the tracking-server version the user created the server
with; runner's client is newer. `mlflow_python(version)` installs `mlflow==version`
(with its own `mlflow-skinny==version`, and boto3 for the s3:// artifact root) from the
package registry with pip into `<cache>/mlflow-<version>` once per machine and returns
that venv's python; the folder is reused while its completion marker says it is whole
(a half-made one, left by an install that was killed, is made again). The cache folder is
`$RUNNER_TEST_CACHE`, else `$XDG_CACHE_HOME/runner-tests`, else `~/.cache/runner-tests`.
A version pip cannot install here raises `Unavailable` (the test skips with its reason).

`OldMlflowServer` starts that python's `mlflow server` with the flags of
tests/support/servers.py (`--workers 1`, a SQLite store, its own process group) and is
stopped, like `MlflowServer`, through its process group.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import requests

from tests.support.servers import MlflowServer, _wait

MARKER = ".runner-complete"
# pip's words for "this version (or a dependency of it) is not to be had here".
_NOT_INSTALLABLE = (
    "No matching distribution found",
    "Could not find a version that satisfies",
    "ResolutionImpossible",
    "requires a different Python",
)


def requirements(version: str) -> list:
    """What the venv gets: the server with its own skinny, boto3 for the s3:// artifact root,
    and the caps an old release did not declare (pip would pick today's releases).

    SQLAlchemy 2.1 removed `sqlalchemy.pool.FallbackAsyncAdaptedQueuePool`, which mlflow
    2.13 to 3.0 import when they open the store (their requirement is only `<3`)."""
    return [f"mlflow=={version}", f"mlflow-skinny=={version}", "boto3", "sqlalchemy<2.1"]


class Unavailable(Exception):
    """This mlflow version cannot be installed on this machine; str() says why."""


def cache_root() -> Path:
    if os.environ.get("RUNNER_TEST_CACHE"):
        return Path(os.environ["RUNNER_TEST_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base, "runner-tests")


def _clean_env() -> dict:
    """The environment for the other venv: nothing of this venv's python leaks into it."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    ours = str(Path(sys.prefix, "bin"))
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != ours)
    return env


def _venv_env(venv: Path) -> dict:
    env = _clean_env()
    env["VIRTUAL_ENV"] = str(venv)
    # mlflow 2.x starts `gunicorn` by name: it must be this venv's.
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env["PATH"]])
    return env


def installed_version(python: Path) -> Optional[str]:
    try:
        out = subprocess.run(
            [str(python), "-c", "import mlflow; print(mlflow.__version__)"],
            capture_output=True,
            text=True,
            timeout=120,
            env=_venv_env(python.parent.parent),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def mlflow_python(version: str, timeout: float = 1200) -> Path:
    """The python of a venv with `mlflow==version` (installed once per machine)."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"mlflow-{version}"
    python = venv / "bin" / "python"
    with open(root / f"mlflow-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installer per version, across pytest processes
        spec = " ".join(requirements(version))
        marker = venv / MARKER
        if marker.exists() and marker.read_text().split("\n")[0] == spec and installed_version(python) == version:
            return python
        if venv.exists():
            shutil.rmtree(venv)  # half-made (an install was killed) or broken: make it again
        started = time.monotonic()
        log = root / f"mlflow-{version}.install.log"
        with open(log, "w") as out:
            steps = [
                [sys.executable, "-m", "venv", str(venv)],
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "--no-input",
                    "--disable-pip-version-check",
                    *requirements(version),
                ],
            ]
            for step in steps:
                out.write(f"$ {' '.join(step)}\n")
                out.flush()
                left = timeout - (time.monotonic() - started)
                try:
                    proc = subprocess.run(
                        step, stdout=out, stderr=subprocess.STDOUT, timeout=max(left, 1), env=_clean_env()
                    )
                except subprocess.TimeoutExpired:
                    raise RuntimeError(f"installing mlflow=={version} took over {timeout:.0f}s: see {log}") from None
                if proc.returncode != 0:
                    text = log.read_text(errors="replace")
                    shutil.rmtree(venv, ignore_errors=True)
                    if any(words in text for words in _NOT_INSTALLABLE):
                        tail = [re.sub(r" \(from versions: [^)]*\)", "", line) for line in text.splitlines()]
                        tail = [line for line in tail if line.startswith("ERROR")][-2:]
                        raise Unavailable(f"mlflow=={version} cannot be installed here: {' / '.join(tail)}")
                    raise RuntimeError(f"installing mlflow=={version} failed: see {log}\n{text[-2000:]}")
        got = installed_version(python)
        if got != version:
            shutil.rmtree(venv, ignore_errors=True)
            raise RuntimeError(f"the venv for mlflow=={version} imports mlflow {got}: see {log}")
        marker.write_text(f"{spec}\ninstalled in {time.monotonic() - started:.0f}s\n")
        return python


def knows_setting(python: Path, name: str) -> bool:
    """Does this venv's mlflow read the environment variable `name`?"""
    found = (python.parent.parent / "lib").glob("python3*/site-packages/mlflow/environment_variables.py")
    return any(name in f.read_text(errors="replace") for f in found)


class OldMlflowServer(MlflowServer):
    """`mlflow server` of another venv's mlflow (see mlflow_python)."""

    def __init__(self, python: Path, root: Path, **kwargs):
        super().__init__(root, **kwargs)
        self.python = Path(python)
        self.venv = self.python.parent.parent

    def start(self, timeout: float = 120) -> OldMlflowServer:
        log_path = self.root / "server.log"
        args = [
            str(self.python),
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.backend_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        if self.serve_artifacts:
            args += ["--artifacts-destination", self.artifact_root]
        else:
            args += ["--default-artifact-root", self.artifact_root, "--no-serve-artifacts"]
        env = {**_venv_env(self.venv), "MLFLOW_DISABLE_TELEMETRY": "true", **self.env}
        if knows_setting(self.python, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"):
            env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def healthy() -> bool:
            try:
                return requests.get(f"{self.url}/health", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        _wait(healthy, self.proc, f"mlflow server ({self.python})", log_path, timeout)
        return self

    def version(self) -> str:
        """The version the server itself reports (GET /version)."""
        r = requests.get(f"{self.url}/version", timeout=10)
        r.raise_for_status()
        return r.text.strip()
