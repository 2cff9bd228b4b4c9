"""Run a finished MLflow run again from its record alone.

    python -m runner.rerun RUN_ID [--tracking-uri URI] [override ...]

Downloads the run's logged config (config/resolved.yaml), composes it as the
primary config on top of runner's schema and runs it, tagging the new run
with runner.rerun_of. Extra Hydra overrides apply on top.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.rerun", description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="where the run is stored (default: MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db)",
    )
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    uri = (
        args.tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or ("sqlite:///" + str(Path("mlruns", "mlflow.db").resolve()))
    )
    from mlflow import MlflowClient

    from .console import say
    from .errors import first_line

    client = MlflowClient(tracking_uri=uri)
    with tempfile.TemporaryDirectory(prefix="runner-rerun-") as tmp:
        try:
            path = client.download_artifacts(args.run_id, "config/resolved.yaml", tmp)
        except Exception as exc:
            say(f"runner: error: cannot read config/resolved.yaml of run {args.run_id} at {uri}: {first_line(exc)}")
            return 2
        body = Path(path).read_text()
        Path(tmp, "rerun.yaml").write_text("defaults:\n  - runner_schema\n  - _self_\n\n" + body)
        cmd = [
            sys.executable,
            "-m",
            "runner",
            "--config-dir",
            tmp,
            "--config-name",
            "rerun",
            f"++tags.rerun_of={args.run_id}",
            *args.overrides,
        ]
        return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
