"""The bare variants: the hand-written Optuna loop a user would write, and its setup.

The workload is read from conf/, never copied: the search space from
conf/sweep/lightgbm.yaml (hydra.sweeper.params, parsed by the sweeper's own parser into
Optuna distributions, in the YAML's order so TPE draws the same trials for the same
seed) and the split from conf/data/synthetic.yaml (data.split on runner's schema).
The parent process parses both once (`workload`) and hands the bare child a JSON file,
so the measured child imports what a hand-written loop imports, not Hydra.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
SWEEP_YAML = REPO / "conf" / "sweep" / "lightgbm.yaml"
DATA_YAML = REPO / "conf" / "data" / "synthetic.yaml"
SEARCHED = "model.params."  # the bare loops pass these keys to lgb.train


def data_config(rows: Optional[int] = None, features: Optional[int] = None, cache_dir: Optional[str] = None):
    """conf/data/synthetic.yaml on runner's schema, optionally at another size."""
    from omegaconf import OmegaConf

    from runner.config import DataConfig

    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(DATA_YAML))
    if rows is not None:
        cfg.demo.rows = rows
    if features is not None:
        cfg.demo.n_features = features
    if cache_dir is not None:
        cfg.cache_dir = cache_dir
    return cfg


def search_space():
    """hydra.sweeper.plain_params of conf/sweep/lightgbm.yaml (the space strategy=plain searches,
    which the bench's runner variants use) -> {key: optuna distribution}, in order."""
    from omegaconf import OmegaConf

    from hydra_plugins.runner_optuna_sweeper._search_space import parse_space
    from runner.errors import ConfigError

    where = f"{SWEEP_YAML.relative_to(REPO)}: hydra.sweeper.plain_params"
    params = OmegaConf.select(OmegaConf.load(SWEEP_YAML), "hydra.sweeper.plain_params", default=None)
    if params is None:
        raise SystemExit(f"bench: {where} is missing")
    try:
        space = parse_space(OmegaConf.to_container(params, resolve=False), where=where)
    except ConfigError as exc:
        raise SystemExit(f"bench: {exc}") from None
    odd = [k for k in space.distributions if not k.startswith(SEARCHED)] + list(space.fixed)
    if odd:
        raise SystemExit(
            f"bench: the bare loops search {SEARCHED}* distributions only; {where} also sets {', '.join(odd)}"
        )
    return space.distributions


def workload() -> Dict[str, Any]:
    """The bare loops' search space and split, read from conf/ (JSON-able)."""
    from optuna.distributions import distribution_to_json

    split = data_config().split
    return {
        "space": [[key, distribution_to_json(dist)] for key, dist in search_space().items()],
        "split": {"valid": float(split.valid), "test": float(split.test), "salt": str(split.salt)},
        "sources": {"space": str(SWEEP_YAML.relative_to(REPO)), "split": str(DATA_YAML.relative_to(REPO))},
    }


def child_pull(args) -> Dict[str, Any]:
    """Pull the synthetic features once through runner's warehouse path into a cache dir."""
    from runner.data import FeatureCache, load_features, open_warehouse

    cfg = data_config(args.rows, args.features, args.cache_dir)
    with open_warehouse(cfg) as wh:
        fs = load_features(wh, cfg, FeatureCache(cfg.cache_dir))
    return {"path": fs.path, "feature_queries": fs.feature_queries, "rows": fs.table.num_rows}


def _suggest(trial, key: str, dist):
    """The public suggest_* call equivalent to the distribution (what study.ask(space) samples)."""
    from optuna.distributions import FloatDistribution, IntDistribution

    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_categorical(key, dist.choices)


def child_bare(args) -> Dict[str, Any]:
    """The hand-written loop: Optuna TPE over LightGBM, features in memory.

    bare: the Dataset built every trial; bare-reuse (--reuse): built once; bare-fluent
    (--reuse --tracking-uri): also MLflow's fluent API as a user writes it, a parent run
    and one nested run per trial with its params and valid_auc.
    """
    import lightgbm as lgb
    import optuna
    import pyarrow.parquet as pq
    from optuna.distributions import json_to_distribution
    from sklearn.metrics import roc_auc_score

    from runner.data import split_labels

    mlflow = _fluent(args) if args.tracking_uri else None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = json.loads(Path(args.workload).read_text())
    space = [(key, json_to_distribution(text)) for key, text in work["space"]]
    split = work["split"]
    # Same rows, order and split as runner (sorted by entity key, hashed split).
    frame = pq.read_table(args.parquet).to_pandas().sort_values("ID", kind="stable").reset_index(drop=True)
    which = split_labels(frame["ID"].to_numpy(), split["valid"], split["test"], split["salt"])
    X = frame.drop(columns=["ID", "Y"]).astype(float)
    y = frame["Y"].astype(float).to_numpy()
    Xtr, ytr = X[which == "train"].reset_index(drop=True), y[which == "train"]
    Xva, yva = X[which == "valid"].reset_index(drop=True), y[which == "valid"]
    base = {
        "objective": "binary",
        "metric": "auc",
        "num_threads": args.threads,
        "seed": 0,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }
    trial_seconds: List[float] = []
    reuse: Dict[str, Any] = {}

    def train(trial) -> float:
        params = dict(base)
        for key, dist in space:
            params[key[len(SEARCHED) :]] = _suggest(trial, key, dist)
        if args.reuse:
            if not reuse:
                reuse["train"] = lgb.Dataset(
                    Xtr, ytr, params={"feature_pre_filter": False, "verbosity": -1}, free_raw_data=False
                )
                reuse["valid"] = lgb.Dataset(Xva, yva, reference=reuse["train"], free_raw_data=False)
            dtrain, dvalid = reuse["train"], reuse["valid"]
        else:
            dtrain = lgb.Dataset(Xtr, ytr)
            dvalid = lgb.Dataset(Xva, yva, reference=dtrain)
        booster = lgb.train(params, dtrain, num_boost_round=args.rounds, valid_sets=[dvalid])
        return float(roc_auc_score(yva, booster.predict(Xva)))

    def objective(trial) -> float:
        t0 = time.perf_counter()
        if mlflow is None:
            auc = train(trial)
        else:
            with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
                auc = train(trial)
                mlflow.log_params(trial.params)
                mlflow.log_metric("valid_auc", auc)
        trial_seconds.append(time.perf_counter() - t0)
        return auc

    started = time.perf_counter()
    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    study = optuna.create_study(direction="maximize", sampler=samplers[args.sampler](seed=0))
    if mlflow is None:
        study.optimize(objective, n_trials=args.trials)
    else:
        with mlflow.start_run(run_name="sweep"):
            study.optimize(objective, n_trials=args.trials)
            mlflow.log_params({f"best_{k}": v for k, v in study.best_params.items()})
            mlflow.log_metric("best_valid_auc", study.best_value)
    loop = time.perf_counter() - started
    return {
        "loop_seconds": loop,
        "trial_seconds": trial_seconds,
        "best_auc": study.best_value,
        "best_trial": study.best_trial.number,
        "trials": len(study.trials),
        # epoch seconds: the bench places them against the process's spawn and exit
        "first_trial_start": study.trials[0].datetime_start.timestamp(),
        "last_trial_end": study.trials[-1].datetime_complete.timestamp(),
    }


def _fluent(args):
    """mlflow, pointed at the benchmark's tracking store and experiment (what a user sets up)."""
    import mlflow

    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment(args.experiment)
    return mlflow
