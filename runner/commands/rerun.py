"""Run a finished MLflow run again from its record alone.

    python -m runner.rerun RUN_ID [--tracking-uri URI] [override ...]

A single run (or a grid job) keeps its config as config/resolved.yaml. A trial of a
runner_optuna sweep keeps it in two halves: its parent run's base config (the artifact its
tag runner.base_config names, uploaded once per sweep) and its sampled values (its tag
optuna.params). The config is composed as the primary config on top of runner's schema and
run as a new single run tagged user.rerun_of, in the store the run was read from (a local
store's folder, a server's URL, a SageMaker ARN). Extra Hydra overrides apply on top.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from ..errors import RunnerError, first_line
from ..names import MlflowTag, Tag

if TYPE_CHECKING:
    from mlflow import MlflowClient


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.rerun", description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="where the run is stored (default: MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db)",
    )
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)  # options before or after the overrides
    uri = (
        args.tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or ("sqlite:///" + str(Path("mlruns", "mlflow.db").resolve()))
    )
    from mlflow import MlflowClient

    from ..console import say
    from ..secrets import redact_url

    missing = _missing_store(uri)
    if missing:  # no MlflowClient on it: that would create an empty store there
        source = (
            "--tracking-uri"
            if args.tracking_uri
            else "MLFLOW_TRACKING_URI"
            if os.environ.get("MLFLOW_TRACKING_URI")
            else "the default, tracker=local in this folder"
        )
        say(
            f"runner: error: run {args.run_id}: no MLflow store at {missing} (looked there: {source}); "
            "give the store the run is in with --tracking-uri"
        )
        return 2
    client = MlflowClient(tracking_uri=uri)
    with tempfile.TemporaryDirectory(prefix="runner-rerun-") as tmp:
        try:
            body = recorded_config(client, args.run_id, tmp)
        except RerunError as exc:
            say(f"runner: error: run {args.run_id} at {redact_url(uri)}: {exc}")
            return 2
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
            *same_store(uri),
            *args.overrides,
        ]
        return subprocess.call(cmd)


def _missing_store(uri: str) -> Optional[str]:
    """The file of a SQLite store URI that does not exist (None: it exists, or not SQLite)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri[len("sqlite:///") :].split("?", 1)[0])
    return None if path.is_file() else str(path)


def same_store(uri: str) -> List[str]:
    """Tracker overrides that send the new run to the store the run was read from: a local
    store's folder (<dir>/mlflow.db), a server's URL or a SageMaker ARN. None for another
    SQLite file name (tracker=local names its file mlflow.db): the recorded tracker stays."""
    from ..tracking.uri import ARN

    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        if path.name != "mlflow.db" or "?" in uri:
            return []
        return ["tracker.kind=local", "tracker.uri=null", f"tracker.dir={_quoted(str(path.parent))}"]
    if uri.startswith(("http://", "https://")):
        return ["tracker.kind=server", f"tracker.uri={_quoted(uri)}"]
    if ARN.match(uri):
        return ["tracker.kind=sagemaker", f"tracker.uri={_quoted(uri)}"]
    return []


def _quoted(value: str) -> str:
    """A value for a Hydra override, quoted when the grammar needs it (':' '/' '=' ...)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class RerunError(RunnerError):
    """The run's record does not hold its config."""


def recorded_config(client: MlflowClient, run_id: str, tmp: str) -> str:
    """The YAML config run `run_id` ran with, from its MLflow record (downloads into tmp)."""
    from omegaconf import OmegaConf

    try:
        run = client.get_run(run_id)
    except Exception as exc:
        raise RerunError(f"cannot read the run: {first_line(exc)}") from None
    tags = run.data.tags
    base = tags.get(Tag.BASE_CONFIG)
    if not base:
        return _download(client, run_id, "config/resolved.yaml", tmp)
    parent = tags.get(MlflowTag.PARENT_RUN_ID)
    if not parent or Tag.TRIAL_PARAMS not in tags:
        raise RerunError(
            f"a sweep trial needs its parent run (tag mlflow.parentRunId) and its sampled values "
            f"(tag optuna.params, written when the trial ends); found {'parent' if parent else 'no parent'}, "
            f"{'values' if Tag.TRIAL_PARAMS in tags else 'no values'}"
        )
    cfg = OmegaConf.create(_download(client, parent, base, tmp))
    for key, value in json.loads(tags[Tag.TRIAL_PARAMS]).items():
        OmegaConf.update(cfg, key.lstrip("+~"), value, merge=True)
    if Tag.ROW_FRACTION in tags:  # the trial's last evaluation (a pruned one: on a row sample)
        OmegaConf.update(cfg, "model.row_fraction", float(tags[Tag.ROW_FRACTION]), merge=True)
    return OmegaConf.to_yaml(cfg)


def _download(client: MlflowClient, run_id: str, path: str, tmp: str) -> str:
    try:
        return Path(client.download_artifacts(run_id, path, tmp)).read_text()
    except Exception as exc:
        raise RerunError(f"cannot read {path} of run {run_id}: {first_line(exc)}") from None


if __name__ == "__main__":
    sys.exit(main())
