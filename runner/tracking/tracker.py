"""MLflow tracking through MlflowClient with explicit run ids.

No fluent active-run stack: every call names its run, so runs nest correctly across
threads and processes. A run's params, metrics and tags go in one log_batch call, so a
run costs create + batch + terminate requests. Every request goes through the outage
retry (runner/tracking/outage.py) and fails as one TrackingError naming the setting.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Union

from ..errors import TrackingError
from ..names import MlflowTag, Tag
from ..secrets import redact_url, scrub
from .dataset import dataset_input
from .hints import failure
from .lifecycle import Run, close, run_scope
from .model import LoggedModelRef
from .outage import GATEWAY, UNREACHABLE, Outage
from .sagemaker import prepare_sagemaker, quiet_plugin_noise
from .uri import tracking_uri, ui_line
from .values import fit, tag_limit

if TYPE_CHECKING:
    import lightgbm as lgb
    import pandas as pd
    from mlflow.store.artifact.artifact_repo import ArtifactRepository
    from omegaconf import DictConfig

    from ..data.featureset import FeatureSet
    from ..model.prepare import Prepared
    from ..score.features import ScoringFeatures
    from .dataset import FrameSummary

log = logging.getLogger(__name__)


# Experiments runner creates are model-training experiments: MLflow 3's UI opens them on the
# runs table instead of its GenAI overview (kinds: mlflow/server/js/.../constants.ts).
EXPERIMENT_TAGS = {MlflowTag.EXPERIMENT_KIND: "custom_model_development"}


class Tracker:
    def __init__(self, cfg: DictConfig) -> None:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(cfg.max_retries))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(cfg.request_timeout))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        # No "Downloading artifacts" bars while a model is saved (MLflow loads it to check the example).
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.cfg = cfg
        self.uri = tracking_uri(cfg)
        self.display_uri = redact_url(self.uri)
        if cfg.kind == "local":
            Path(cfg.dir).mkdir(parents=True, exist_ok=True)
        quiet_plugin_noise(cfg.kind)
        if cfg.kind == "sagemaker":
            prepare_sagemaker(self.uri)
        import mlflow
        from mlflow import MlflowClient

        if cfg.kind != "local":
            # Remote stores: the global URI is what MLflow's plugins (sagemaker-mlflow's
            # SigV4 auth and ARN header) and any fluent call read; MLFLOW_TRACKING_URI
            # also carries it to worker processes.
            mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        self.outage = Outage(self.uri, self.display_uri, cfg.get("outage_deadline"), ride_out=cfg.kind != "local")
        self._experiment_id: Optional[str] = None
        self._artifact_uris: Dict[str, str] = {}

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, artifacts: bool = False, **kwargs: Any) -> Any:
        """fn(*args, **kwargs) through the outage retry; any failure as one TrackingError."""
        try:
            return self.outage.call(what, fn, *args, **kwargs)
        except Exception as exc:
            raise failure(self.cfg.kind, self.display_uri, what, exc, artifacts) from None

    # experiment and runs -------------------------------------------------------

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            name = self.cfg.experiment
            what = f"open experiment {name!r}"
            exp = self._call(what, self.client.get_experiment_by_name, name)
            if exp is None:
                location = Path(self.cfg.dir, "artifacts").resolve().as_uri() if self.cfg.kind == "local" else None
                try:
                    self._experiment_id = self.outage.call(
                        "create the experiment",
                        self.client.create_experiment,
                        name,
                        artifact_location=location,
                        tags=EXPERIMENT_TAGS,
                    )
                except Exception as exc:  # created concurrently by another worker?
                    exp = self._call(what, self.client.get_experiment_by_name, name)
                    if exp is None:
                        raise failure(self.cfg.kind, self.display_uri, what, exc) from None
                    self._experiment_id = exp.experiment_id
            elif exp.lifecycle_stage == "deleted":
                raise TrackingError(
                    f"tracker.experiment={name!r} is deleted in MLflow: restore it or choose another name"
                )
            else:
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    def run(self, name: Optional[str], tags: Dict[str, Any], **how: Any) -> AbstractContextManager[Run]:
        """One run's life, `with tracker.run(name, tags, parent=...) as run:` (lifecycle.py)."""
        return run_scope(self, name, tags, **how)

    def close(self, run_id: str, status: str, **what: Any) -> bool:
        """End a run another (dead) process left RUNNING, with what it lacks (lifecycle.py)."""
        return close(self, run_id, status, **what)

    def _create_run(self, run_name: Optional[str], tags: Dict[str, Any], parent_run_id: Optional[str] = None) -> str:
        """The create request (the lifecycle's; callers use run())."""
        tags = dict(tags)
        if parent_run_id:
            tags[MlflowTag.PARENT_RUN_ID] = parent_run_id
        clean = {k: t for k, v in tags.items() if (t := fit("tag", k, v, tag_limit())) is not None}
        # A retried create must not make a second run when the first reached the server.
        token = clean[Tag.CREATE_TOKEN] = uuid.uuid4().hex
        tried: List[int] = []
        experiment = self.experiment_id()

        def create() -> Any:
            if tried:
                found = self.client.search_runs([experiment], f"tags.`{Tag.CREATE_TOKEN}` = '{token}'", max_results=1)
                if found:
                    return found[0]
            tried.append(1)
            return self.client.create_run(experiment, tags=clean, run_name=run_name)

        run = self._call("create a run", create)
        # Known from the create response: uploads need no runs/get to find it.
        self._artifact_uris[run.info.run_id] = run.info.artifact_uri
        return run.info.run_id

    def get_run(self, run_id: str) -> Any:
        """The run, or None when the store has no run with this id."""

        def get() -> Any:
            try:
                return self.client.get_run(run_id)
            except Exception as exc:
                if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
                    return None
                raise

        return self._call(f"read run {run_id}", get)

    def search_runs(self, filter_string: str, max_results: int = 1000) -> list:
        """Runs of this tracker's experiment that match an MLflow search filter."""
        return self._call(
            "search runs", self.client.search_runs, [self.experiment_id()], filter_string, max_results=max_results
        )

    def log(
        self,
        run_id: str,
        params: Optional[Dict[str, Any]] = None,
        metrics: Optional[Dict[str, float]] = None,
        tags: Optional[Dict[str, Any]] = None,
        step: int = 0,
        history: Optional[Dict[str, List[Tuple[int, float, int]]]] = None,
    ) -> None:
        """One log_batch (MLflow's client splits it past 1000 entities). history: a metric's
        points as (step, value, timestamp ms), logged as given, in the same batch."""
        import time

        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        now = int(time.time() * 1000)
        p = [
            Param(k, t)
            for k, v in (params or {}).items()
            if (t := fit("param", k, v, MAX_PARAM_VAL_LENGTH)) is not None
        ]
        m = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items()]
        m += [Metric(k, float(v), ts, n) for k, points in (history or {}).items() for n, v, ts in points]
        g = [RunTag(k, s) for k, v in (tags or {}).items() if (s := fit("tag", k, v, tag_limit())) is not None]
        if p or m or g:
            self._call("log params/metrics", self.client.log_batch, run_id, metrics=m, params=p, tags=g)

    def _end_run(self, run_id: str, status: str) -> None:
        """The end request (the lifecycle's; callers leave the end to run() or close())."""
        self._call(f"end run {run_id} as {status}", self.client.set_terminated, run_id, status=status)

    def _reopen(self, run_id: str) -> None:
        """Set a finished run back to RUNNING (a resumed sweep's parent)."""
        self._call(f"reopen run {run_id}", self.client.update_run, run_id, status="RUNNING")

    # artifacts -----------------------------------------------------------------

    def _artifact_repo(self, run_id: str) -> Optional[ArtifactRepository]:
        """The run's artifact repository, without a request when this Tracker created the run."""
        uri = self._artifact_uris.get(run_id)
        if uri is None:
            return None
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        return get_artifact_repository(uri, tracking_uri=self.uri)

    def _upload(self, run_id: str, what: str, method: str, *args: Any) -> None:
        repo = self._artifact_repo(run_id)
        if repo is None:
            self._call(what, getattr(self.client, method), run_id, *args, artifacts=True)
        else:
            self._call(what, getattr(repo, method), *args, artifacts=True)

    def log_artifact(self, run_id: str, local_path: str, artifact_path: Optional[str] = None) -> None:
        self._upload(run_id, f"upload {Path(local_path).name}", "log_artifact", local_path, artifact_path)

    def log_text(self, run_id: str, text: str, path: str) -> None:
        text = scrub(text)  # the resolved config may hold a URL typed with user:password@
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp, Path(path).name)
            local.write_text(text, encoding="utf-8")
            parent = str(Path(path).parent)
            self.log_artifact(run_id, str(local), None if parent == "." else parent)

    def log_files(self, run_id: str, files: List[Tuple[str, bytes]], folder: str) -> None:
        """Files (path under `folder`, content) as the run's artifacts, in one folder upload."""
        if not files:
            return
        with tempfile.TemporaryDirectory() as tmp:
            for path, content in files:
                local = Path(tmp, path)
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(content)
            self._upload(run_id, f"upload {folder}/ ({len(files)} files)", "log_artifacts", tmp, folder)

    def log_model(self, run_id: str, booster: lgb.Booster, prepared: Prepared) -> str:
        """Log the model as the run's artifacts `model/` (runner/tracking/model.py: a pyfunc model
        taking raw rows, plus the LightGBM flavor); return its URI, runs:/<run_id>/model."""
        from .model import save_model

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "model")
            save_model(path, booster, prepared, run_id=run_id)
            repo = self._artifact_repo(run_id)
            if repo is None:
                self._call("upload the model", self.client.log_artifacts, run_id, str(path), "model", artifacts=True)
            else:
                self._call("upload the model", repo.log_artifacts, str(path), "model", artifacts=True)
        return f"runs:/{run_id}/model"

    def log_logged_model(
        self,
        run_id: str,
        booster: lgb.Booster,
        prepared: Prepared,
        tags: Optional[Dict[str, Any]] = None,
        params: Optional[Dict[str, Any]] = None,
    ) -> LoggedModelRef:
        """The same model as an MLflow 3 logged model `model` of the run (models:/<model_id>; the
        run's outputs link to it; runs:/<run_id>/model still resolves). Idempotent per run: a READY
        one of the run is reused. A server without logged models (MLflow 2) gets the run artifacts
        of log_model instead, with no model id, and one warning line per process."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        from .hints import missing_api, skipped, unsupported
        from .model import save_model

        feature = "MLflow 3 logged models"
        if skipped(self.uri, feature):
            return LoggedModelRef(self.log_model(run_id, booster, prepared))
        experiment = self.experiment_id()
        what = "find the run's logged model"
        query = f"source_run_id = '{run_id}' AND name = 'model'"
        try:
            found = self.outage.call(what, self.client.search_logged_models, [experiment], query, max_results=50)
        except Exception as exc:
            if not missing_api(exc):
                raise failure(self.cfg.kind, self.display_uri, what, exc) from None
            unsupported(self.client, self.uri, feature, "the model is logged as the run's artifacts (no model id)")
            return LoggedModelRef(self.log_model(run_id, booster, prepared))
        ready = [m for m in found if m.status == LoggedModelStatus.READY]
        if ready:
            return LoggedModelRef(f"models:/{ready[0].model_id}", ready[0].model_id, ready[0].artifact_location)
        model = self._call(
            "create the logged model",
            self.client.create_logged_model,
            experiment,
            name="model",
            source_run_id=run_id,
            tags={k: str(v) for k, v in (tags or {}).items()},
            params={k: str(v) for k, v in (params or {}).items()},
            model_type="lightgbm",
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "model")
            save_model(path, booster, prepared, run_id=run_id, model_id=model.model_id)
            repo = get_artifact_repository(model.artifact_location, tracking_uri=self.uri)
            self._call("upload the model", repo.log_artifacts, str(path), artifacts=True)
        self._call(
            "finalize the logged model", self.client.finalize_logged_model, model.model_id, LoggedModelStatus.READY
        )
        self._call(
            "link the logged model to its run",
            self.client.log_outputs,
            run_id,
            [LoggedModelOutput(model.model_id, step=0)],
        )
        return LoggedModelRef(f"models:/{model.model_id}", model.model_id, model.artifact_location)

    def log_dataset(
        self,
        run_id: str,
        frame: Union[pd.DataFrame, FrameSummary],
        features: Union[FeatureSet, ScoringFeatures],
        targets: Optional[str],
        context: str = "training",
        model_id: Optional[str] = None,
    ) -> None:
        """The features as the run's dataset input (and an MLflow 3 logged model as its model
        input, e.g. of a scoring run); a server without dataset inputs (MLflow before 2.4: no
        runs/log-inputs) gets one warning line per process and the run goes on."""
        from mlflow.entities import LoggedModelInput

        from .hints import missing_api, skipped, unsupported

        feature = "dataset inputs"
        if skipped(self.uri, feature):
            return
        inputs = [dataset_input(frame, features, targets, context)]
        models = [LoggedModelInput(model_id)] if model_id else None

        def log_inputs() -> None:
            try:
                self.client.log_inputs(run_id, inputs, models=models)
            except Exception as exc:
                if not missing_api(exc):
                    raise
                unsupported(self.client, self.uri, feature, "the run's dataset is not recorded")

        self._call("log the dataset", log_inputs)

    # registry ------------------------------------------------------------------

    def register(self, name: str, run_id: str, model_uri: str, model_id: Optional[str] = None) -> Any:
        """A version of registered model `name` for the run's model at `model_uri` (a logged
        model's id links the version to it); idempotent per run. A registry that cannot search
        versions by run (no such API, or the filter refused) gets one warning line per process
        and the version is registered without that check."""
        from .hints import error_code, missing_api, skipped, unsupported

        feature = "searching model versions by run"

        def versions() -> List[Any]:
            if skipped(self.uri, feature):
                return []
            try:
                return self.client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
            except Exception as exc:
                if not (missing_api(exc) or error_code(exc) == "INVALID_PARAMETER_VALUE"):
                    raise
                unsupported(
                    self.client, self.uri, feature, "the version is registered without checking for one of this run"
                )
                return []

        what = f"register model {name!r}"
        # Idempotent: a sweep killed after registering (before recording it) registers once.
        existing = self._call(what, versions)
        if existing:
            return max(existing, key=lambda v: int(v.version))

        def ensure_model() -> None:
            try:
                self.client.get_registered_model(name)
            except Exception as exc:
                if UNREACHABLE.search(str(exc)) or GATEWAY.search(str(exc)):
                    raise
                self.client.create_registered_model(name)

        self._call(what, ensure_model)
        return self._call(what, self.client.create_model_version, name, model_uri, run_id=run_id, model_id=model_id)

    def ui_command(self, run_id: Optional[str] = None) -> str:
        """What opens the MLflow UI on the experiment (runner/tracking/uri.py ui_line)."""
        return ui_line(self.cfg.kind, self.uri, self.display_uri, self.cfg.dir, self._experiment_id, run_id)
