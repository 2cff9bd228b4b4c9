"""Real services for tests, each in its own process group on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, proc, what: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        if check():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not up after {timeout:.0f}s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.1)


class MlflowServer:
    """`mlflow server` with a SQLite store; stop()/start() keep the same port and data."""

    def __init__(
        self, root: Path, artifact_root: Optional[str] = None, serve_artifacts: bool = True, env: Optional[dict] = None
    ):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backend_uri = f"sqlite:///{self.root}/mlflow.db"
        self.artifact_root = artifact_root or str(self.root / "artifacts")
        self.serve_artifacts = serve_artifacts
        self.env = env or {}
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 120) -> MlflowServer:
        log_path = self.root / "server.log"
        args = [
            sys.executable,
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
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.env}
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def healthy() -> bool:
            try:
                return requests.get(f"{self.url}/health", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        _wait(healthy, self.proc, "mlflow server", log_path, timeout)
        return self

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


class FakesnowProcess:
    """fakesnow as a separate process, answering large results in chunks as Snowflake does
    (runner/embedded/server.py): the stand-in for a Snowflake account."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 30) -> FakesnowProcess:
        log_path = self.root / "fakesnow.log"
        with open(log_path, "ab") as log:
            # fakesnow makes a temp folder at import and never removes it: keep it under root.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runner.embedded.server", "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "TMPDIR": str(self.root)},
            )

        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        _wait(up, self.proc, "fakesnow", log_path, timeout)
        return self

    def connect_kwargs(self) -> dict:
        return dict(
            user="fake",
            password="snow",
            account="fakesnow",
            host="127.0.0.1",
            port=self.port,
            protocol="http",
            network_timeout=5,
        )

    def fetch(self, sql: str):
        """The result of one statement as a pandas DataFrame (a connector connection of its own)."""
        import snowflake.connector

        conn = snowflake.connector.connect(**self.connect_kwargs())
        try:
            cur = conn.cursor()
            cur.execute(sql)
            return cur.fetch_arrow_all().to_pandas()
        finally:
            conn.close()

    @contextmanager
    def session(self, **configs) -> Iterator:
        """A Snowpark Session on this server, closed at the end while the server is up.
        Snowpark also registers a close at interpreter exit, which would retry against a
        server long gone and log connection-refused tracebacks after pytest's summary."""
        import atexit

        from snowflake.snowpark import Session

        session = Session.builder.configs({**self.connect_kwargs(), **configs}).create()
        try:
            yield session
        finally:
            session.close()
            atexit.unregister(session._close_at_exit)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


class PostgresCluster:
    """A throwaway PostgreSQL cluster under a temp dir, listening on 127.0.0.1 only."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.port = free_port()
        self.proc = None

    def _as_postgres(self, args, **kw):
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.run(args, check=True, capture_output=True, text=True, **kw)

    def start(self) -> PostgresCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        data, sock = self.root / "data", self.root / "sock"
        sock.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(sock, "postgres")
        pwfile = self.root / "pw"
        pwfile.write_text("runner-test-pw\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres")
        self._as_postgres(["initdb", "-D", str(data), "-U", "runner", "--pwfile", str(pwfile), "-A", "scram-sha-256"])
        self._as_postgres(
            [
                "pg_ctl",
                "-D",
                str(data),
                "-l",
                str(self.root / "pg.log"),
                "-w",
                "-o",
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {sock} -c fsync=off -c max_connections=200",
                "start",
            ]
        )
        self.proc = True
        return self

    def url(self, password: str = "runner-test-pw", db: str = "postgres") -> str:
        return f"postgresql+psycopg2://runner:{password}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.proc:
            self._as_postgres(["pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop"])
            self.proc = None


class MotoS3:
    """moto's S3-compatible server in a thread on 127.0.0.1: the artifact store SageMaker MLflow uses."""

    access_key = "AKIDRUNNERTEST"
    secret_key = "runner/test+secret/KEY"
    region = "us-east-1"

    def __init__(self, bucket: str = "mlflow-artifacts"):
        self.bucket = bucket
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = None

    def start(self) -> MotoS3:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def env(self) -> dict:
        """What an MLflow client or server needs to use this S3 (credentials kept off real files)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "MLFLOW_S3_ENDPOINT_URL": self.url,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1,localhost",
        }

    def keys(self, prefix: str = "") -> list:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
