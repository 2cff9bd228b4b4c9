"""Every name runner writes into MLflow and Optuna, in one place.

Stored runs and studies are read back by these names (rerun, resume, recovery, the summary,
the UI's columns), so a name here is part of runner's format: never rename one. Code uses
the constants; tests/unit/test_names.py checks no other module spells one out.
"""

from __future__ import annotations

from typing import Dict


class Tag:
    """MLflow run tags runner writes (its own `runner.*`, `optuna.*`, `best.*`)."""

    # every run
    VERSION = "runner.version"
    OVERRIDES = "runner.overrides"  # the job's Hydra overrides, JSON
    GIT_DIRTY = "runner.git.dirty"
    CREATE_TOKEN = "runner.create_token"  # a retried create finds the run the first try made
    ERROR = "runner.error"  # FAILED runs: "Type: message"
    INTERRUPTED = "runner.interrupted"  # KILLED runs: the signal, or why the sweep stopped
    JOB = "runner.job"  # "score" for scoring runs
    # a training run's data
    CACHE = "runner.cache"  # hit / miss / offline-hit
    CACHE_KEY = "runner.cache_key"
    DATASET_DIGEST = "runner.dataset.digest"
    FEATURE_QUERIES = "runner.warehouse.feature_queries"
    QUERY_IDS = "runner.warehouse.query_ids"
    WAREHOUSE_STARTED = "runner.warehouse.started"
    OBJECTIVE = "runner.objective"
    ALL_NULL = "runner.features.all_null"  # columns null in every row: not used as features
    ROW_FRACTION = "runner.row_fraction"  # a sweep trial's last rung: the fraction of training rows
    # sweeps: the parent and its trials
    SWEEP = "runner.sweep"  # "basic" (grid parent) or "runner_optuna" (parent and trials)
    SWEEP_SWEEPER = "runner.sweep.sweeper"
    SWEEP_DIR = "runner.sweep.dir"
    SWEEP_LAUNCHER = "runner.sweep.launcher"
    SWEEP_STATUS = "runner.sweep.status"
    PARENT_TOKEN = "runner.parent_token"  # also a study attribute: ties the two before the id is known
    BASE_CONFIG = "runner.base_config"  # a trial: the parent's artifact with its base config
    WORKER = "runner.worker"  # a trial: host:pid that ran it
    PRUNED = "runner.pruned"
    RESUME_FILLED = "runner.resume.filled"  # what a resume filled in for a trial's run
    STUDY_NAME = "optuna.study_name"
    TRIAL_NUMBER = "optuna.trial_number"
    TRIAL_STATE = "optuna.state"
    TRIAL_PARAMS = "optuna.params"  # a trial's sampled values, JSON
    SAMPLER = "optuna.sampler"
    SAMPLER_OPTIONS = "optuna.sampler.options"
    PRUNER = "optuna.pruner"
    PRUNER_OPTIONS = "optuna.pruner.options"
    DIRECTION = "optuna.direction"
    DIRECTIONS = "optuna.directions"
    METRIC = "optuna.metric"
    STORAGE = "optuna.storage"
    N_TRIALS = "optuna.n_trials"
    N_JOBS = "optuna.n_jobs"
    SEARCH_SPACE = "optuna.search_space"
    LAUNCHER = "optuna.launcher"
    WORKERS = "optuna.workers"
    BEST_TRIAL = "best.trial_number"
    BEST_RUN_ID = "best.run_id"
    BEST_PARAMS = "best.params"
    BEST_PARETO = "best.pareto_trials"
    BEST_MODEL_URI = "best.model_uri"
    BEST_MODEL_ID = "best.model_id"
    BEST_REGISTERED_MODEL = "best.registered_model"
    BEST_REGISTERED_VERSION = "best.registered_version"
    # scoring runs
    SCORE_TABLE = "runner.score.table"
    SCORE_MODEL_URI = "runner.score.model_uri"
    SCORE_MODEL_RUN_ID = "runner.score.model_run_id"
    SCORE_MODEL_ID = "runner.score.model_id"
    SCORE_MODEL_NAME = "runner.score.model_name"
    SCORE_MODEL_VERSION = "runner.score.model_version"
    SCORE_LABEL_DROPPED = "runner.score.label_dropped"
    SCORE_WRITE_QUERY_IDS = "runner.score.write_query_ids"


class Prefix:
    """Prefixes of tag and param names that carry a key of the user's or of the search space."""

    USER_TAG = "user."  # tags.<key> of the config -> tag user.<key>
    TRIAL_PARAM = "optuna.param."  # a trial's sampled value, one tag per param
    BEST_PARAM = "best.param."  # the best trial's value, one parent tag per param
    SPACE = "space."  # the parent's params: the search space, one per param


class MlflowTag:
    """MLflow's own system tags that runner sets."""

    PARENT_RUN_ID = "mlflow.parentRunId"
    SOURCE_NAME = "mlflow.source.name"
    SOURCE_TYPE = "mlflow.source.type"
    SOURCE_GIT_COMMIT = "mlflow.source.git.commit"
    USER = "mlflow.user"
    EXPERIMENT_KIND = "mlflow.experimentKind"
    DATA_CONTEXT = "mlflow.data.context"


class TrialAttr:
    """Optuna trial user attributes the sweeper writes."""

    RUN_ID = "mlflow_run_id"
    MODEL_PATH = "model_path"  # the trial's booster, saved locally (only the winner is uploaded)
    OVERRIDES = "overrides"
    FEATURE_QUERIES = "feature_queries"
    ERROR = "error"
    INTERRUPTED = "interrupted"
    OVER_BUDGET = "over_budget"
    STALE = "stale"  # why a RUNNING trial of a dead process was failed
    OWNER = "runner.owner"  # {host, pid, start} of the process that asked it
    WORKER = "runner.worker"  # the launcher job's process that ran it
    HEARTBEAT = "runner.heartbeat"


class StudyAttr:
    """Optuna study user attributes the sweeper writes."""

    PARENT_RUN_ID = "mlflow_parent_run_id"
    PARENT_TOKEN = Tag.PARENT_TOKEN
    TRIAL_RUNS = "runner.trial_runs"  # {trial number: run id} given on a resume
    SUMMARY = "runner.summary"  # the study state the last summary was written for
    BEST_HISTORY = "runner.best_history"  # points of best_<metric> sent so far
    REGISTERED_MODEL = "registered_model"
    LEFT = "runner.left."  # prefix: "<prefix><host>:<pid>:<start>" -> when that worker left the study
    # prefix: "<prefix><host>:<pid>:<start>" -> feature queries of a worker that no trial of its reported
    FEATURE_QUERIES = "runner.feature_queries."


def all_names() -> Dict[str, str]:
    """Every name above as "Class.NAME" -> value (tests/unit/test_names.py)."""
    found: Dict[str, str] = {}
    for group in (Tag, Prefix, MlflowTag, TrialAttr, StudyAttr):
        found.update({f"{group.__name__}.{k}": v for k, v in vars(group).items() if k.isupper()})
    return found
