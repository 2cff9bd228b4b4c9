"""Typed schema of runner's config, registered in Hydra's ConfigStore.

Each YAML file under conf/ is merged onto these dataclasses, so an unknown key
or a value of the wrong type fails at compose time with Hydra's own message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, cast

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


@dataclass
class SplitConfig:
    valid: float = 0.15
    test: float = 0.15
    # Changing the salt reshuffles which entities land in which split.
    salt: str = "runner-split-v1"


@dataclass
class SampleConfig:
    # A sample of the feature result, drawn in the warehouse (docs/data.md): set one of
    # `fraction` (each row kept with this probability, 0 < f < 1) or `rows` (exactly this
    # many rows); both null: all rows. Rows are picked by a hash of data.entity_key and
    # `seed`: the same seed gives the same rows on every run.
    fraction: Optional[float] = None
    rows: Optional[int] = None
    seed: int = 0


@dataclass
class DemoConfig:
    # Which seed fills the embedded warehouse: churn (CUSTOMERS, EVENTS), synthetic
    # (table SYNTH: `rows` x `n_features` floats and a 0/1 label Y, the benchmark's workload)
    # or none (an empty schema); null: churn, or none when data.files gives the tables.
    dataset: Optional[str] = None
    customers: int = 50_000
    events: int = 1_000_000
    rows: int = 200_000
    n_features: int = 50
    seed: int = 7


@dataclass
class DataConfig:
    # embedded: a fakesnow server started by runner and seeded with demo tables.
    # snowflake: a real account; credentials come from connections.toml or SNOWFLAKE_* env.
    backend: str = "embedded"
    connection_name: Optional[str] = None
    account: Optional[str] = None
    database: Optional[str] = None
    schema: Optional[str] = None
    warehouse: Optional[str] = None
    role: Optional[str] = None
    # Exactly one feature definition: a table, a SQL query, or a callable
    # {_target_: pkg.fn, ...kwargs} called as fn(session, cfg, **kwargs).
    table: Optional[str] = None
    query: Optional[str] = None
    features: Optional[Dict[str, Any]] = None
    # A column unique per row (the split hashes it). null: only with data.table naming a table
    # of data.files, which then gets a key RUNNER_ROW from the row's position (docs/data.md).
    entity_key: Optional[str] = MISSING
    label: str = MISSING
    # Embedded warehouse only: local files loaded as tables before the definition runs,
    # {TABLE: path or glob}, CSV or Parquet (docs/data.md). data=file fills it from data.path.
    files: Dict[str, str] = field(default_factory=dict)
    path: Optional[str] = None
    # A column's type where CSV inference is not what you want: {COLUMN: text|number|float|
    # date|timestamp|boolean} (e.g. ZIP: text keeps leading zeros).
    column_types: Dict[str, str] = field(default_factory=dict)
    # Files a feature function or query reads itself (paths or globs): their content is part
    # of the data version, so an edited file is never served from the cache.
    inputs: List[str] = field(default_factory=list)
    drop: List[str] = field(default_factory=list)
    # Data version in the cache key: a fixed snapshot, else the tables' last-altered times.
    # A snapshot (ISO timestamp, UTC if no offset) also reads every source table as of
    # that time (Snowflake time travel, AT(TIMESTAMP => ...)).
    snapshot: Optional[str] = None
    # none: pull the feature query's result. table: write it once to a warehouse table
    # named by the cache key (RUNNER_FEATURES_<key[:16]>) and pull that table, so other
    # workers and later runs read it instead of recomputing the joins.
    materialize: str = "none"
    refresh: bool = False
    cache_dir: str = ".runner/cache"
    split: SplitConfig = field(default_factory=SplitConfig)
    # Explore on a sample of the rows (a sweep), then run on all of them (data.sample=null).
    sample: Optional[SampleConfig] = field(default_factory=SampleConfig)
    network_timeout: int = 60
    query_tag: bool = True
    demo: DemoConfig = field(default_factory=DemoConfig)


@dataclass
class LightGBMParams:
    objective: str = "binary"
    num_class: int = 1
    learning_rate: float = 0.05
    num_leaves: int = 31
    max_depth: int = -1
    min_child_samples: int = 20
    feature_fraction: float = 1.0
    bagging_fraction: float = 1.0
    bagging_freq: int = 0
    lambda_l1: float = 0.0
    lambda_l2: float = 0.0
    min_split_gain: float = 0.0
    max_bin: int = 255
    num_threads: int = 0
    seed: int = 0
    deterministic: bool = True
    # LightGBM's histogram layout; both null: row-wise for a table kept in memory (as always),
    # col-wise for one read in batches (row-wise holds a second, row-major copy of every bin;
    # LightGBM's advice when memory is short). Either way fixed, never LightGBM's timing-based
    # choice; a run logs the values it trained with.
    force_row_wise: Optional[bool] = None
    force_col_wise: Optional[bool] = None
    verbosity: int = -1
    # Any other LightGBM parameter, passed through as is.
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    name: str = "lightgbm"
    params: LightGBMParams = field(default_factory=LightGBMParams)
    num_boost_round: int = 500
    early_stopping_rounds: int = 50
    # Validation metric; null picks auc / multi_logloss / rmse from the objective.
    metric: Optional[str] = None
    # objective=binary with a label of two values other than 0/1 (e.g. 'malignant'/'benign'):
    # the value whose probability the model predicts; null: the one that sorts last.
    positive_class: Optional[str] = None
    # Train on this fraction of the training rows (a sample fixed by row_seed; the validation
    # and test rows stay whole): what a sweep's cheap evaluations use (docs/sweeps.md).
    row_fraction: float = 1.0
    row_seed: int = 0


@dataclass
class TrackerConfig:
    # local: SQLite file + artifact folder under `dir`; server: any MLflow URL in `uri`;
    # sagemaker: a SageMaker MLflow tracking-server ARN in `uri`.
    kind: str = "local"
    uri: Optional[str] = None
    dir: str = "mlruns"
    experiment: str = "runner"
    # Log the model (a pyfunc model taking raw feature rows; runner/tracking/model.py): every
    # single run's; for a sweep, the best trial's only, on its child run, at the end.
    log_model: bool = True
    # Register a sweep's best model in the Model Registry; false: only log it.
    register: bool = True
    # Charts, evaluation metrics (test_precision_score, ...) and a one-page report
    # (evaluation/report.html) for every single run and a sweep's best trial; false: none.
    report: bool = True
    # The registered model's name; null: tracker.experiment, with characters other than letters,
    # digits, _ . - replaced by - (hydra.sweeper.registered_model overrides it for one sweep).
    registered_model: Optional[str] = None
    request_timeout: int = 30
    # MLflow's own per-request retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES, backoff factor 1).
    max_retries: int = 2
    # Seconds runner keeps retrying (backoff 0.5 s doubling to 5 s) while the tracking
    # server is unreachable before the job/sweep stops with one error; server/sagemaker only.
    outage_deadline: float = 300.0


@dataclass
class ScoreConfig:
    # python -m runner.score MODEL_URI: the warehouse table the predictions are written to
    # (created if missing); a name without database/schema lands in the session's
    # (data.database / data.schema). Rows are keyed by the model URI: scoring the same URI
    # again replaces its rows in one transaction (docs/scoring.md).
    table: str = "RUNNER_PREDICTIONS"
    # The scoring run's name; null: score-<model> (registered name and version, model id or run).
    run_name: Optional[str] = None


@dataclass
class RunnerConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    run_name: Optional[str] = None
    tags: Dict[str, str] = field(default_factory=dict)


def to_dict(node: Any, resolve: bool = True) -> Dict[str, Any]:
    """A config node as a plain dict (OmegaConf.to_container, typed for a mapping node)."""
    if not OmegaConf.is_config(node):
        return dict(node)
    return cast(Dict[str, Any], OmegaConf.to_container(node, resolve=resolve))


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="runner_schema", node=RunnerConfig)


register()
