"""Config schema of the runner Optuna sweeper, registered in Hydra's ConfigStore.

Imported by Hydra's plugin scan at every app start: dataclasses only, no optuna.
Select with `hydra/sweeper=runner_optuna` (conf/sweep/lightgbm.yaml does),
`hydra/sweeper/sampler=random`, `hydra/sweeper/pruner=hyperband` (default: nop, no pruning).
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore

# ---------------------------------------------------------------- samplers


@dataclass
class SamplerConfig:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: Optional[int] = None


@dataclass
class TPESamplerConfig(SamplerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.TPESampler.html

    null leaves a setting to Optuna's own default, so `hydra/sweeper/sampler=tpe` samples
    exactly as `optuna.samplers.TPESampler(seed=...)` does (Optuna 5: multivariate, and
    constant_liar so parallel trials do not all sample the same point).
    """

    _target_: str = "optuna.samplers.TPESampler"
    consider_prior: Optional[bool] = None
    consider_magic_clip: Optional[bool] = None
    warn_independent_sampling: Optional[bool] = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: Optional[bool] = None
    group: bool = False
    constant_liar: bool = True
    consider_endpoints: Optional[bool] = None
    prior_weight: Optional[float] = None


@dataclass
class RandomSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.RandomSampler"


@dataclass
class CmaEsSamplerConfig(SamplerConfig):
    """Needs the `cmaes` package."""

    _target_: str = "optuna.samplers.CmaEsSampler"
    x0: Optional[Dict[str, Any]] = None
    sigma0: Optional[float] = None
    n_startup_trials: int = 1
    restart_strategy: Optional[str] = None
    popsize: Optional[int] = None
    inc_popsize: int = -1
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False
    consider_pruned_trials: bool = False
    warn_independent_sampling: bool = True


@dataclass
class GPSamplerConfig(SamplerConfig):
    """Needs `torch` (and scipy)."""

    _target_: str = "optuna.samplers.GPSampler"
    n_startup_trials: int = 10
    deterministic_objective: bool = False


@dataclass
class QMCSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.QMCSampler"
    qmc_type: str = "sobol"
    scramble: bool = False
    warn_asynchronous_seeding: bool = True


@dataclass
class NSGAIISamplerConfig(SamplerConfig):
    """Multi-objective; set hydra.sweeper.direction to a list."""

    _target_: str = "optuna.samplers.NSGAIISampler"
    population_size: int = 50
    mutation_prob: Optional[float] = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclass
class MOTPESamplerConfig(SamplerConfig):
    """Removed from Optuna in 4.0 (TPESampler handles several objectives): a clear error."""

    _target_: str = "optuna.samplers.MOTPESampler"


@dataclass
class GridSamplerConfig(SamplerConfig):
    """search_space null: built from the choice(...)/range(...) params."""

    _target_: str = "optuna.samplers.GridSampler"
    search_space: Optional[Dict[str, List[Any]]] = None


# ----------------------------------------------------------------- pruners


@dataclass
class PrunerConfig:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    # In boosting rounds (the step LightGBM reports).
    n_warmup_steps: int = 10
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class HyperbandPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 10
    max_resource: Any = "auto"
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class SuccessiveHalvingPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class PatientPrunerConfig(PrunerConfig):
    """Prunes only when the wrapped pruner would and the trial has not improved over its last
    `patience` reports (report_every rounds each)."""

    _target_: str = "optuna.pruners.PatientPruner"
    wrapped_pruner: Any = field(
        default_factory=lambda: {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 5, "n_warmup_steps": 10}
    )
    patience: int = 2
    min_delta: float = 0.0


@dataclass
class WilcoxonPrunerConfig(PrunerConfig):
    """Meant for steps that are independent evaluations (folds, instances), not boosting rounds."""

    _target_: str = "optuna.pruners.WilcoxonPruner"
    p_threshold: float = 0.1
    n_startup_steps: int = 2


@dataclass
class NopPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.NopPruner"


# ----------------------------------------------------------------- sweeper


@dataclass
class RunnerOptunaSweeperConf:
    _target_: str = "hydra_plugins.runner_optuna_sweeper.runner_optuna_sweeper.RunnerOptunaSweeper"
    # The sweeper gets sampler/pruner as configs and builds them itself (lazily).
    _recursive_: bool = False
    # No pruning by default (issue 15, benchmarks/pruning.py): with a fixed n_trials, every
    # pruner tried ended with a worse or equal best than no pruning on the benchmark's
    # workload and none reached it in half the time; MedianPruner at round 10 prunes the
    # slow learning rates. `hydra/sweeper/pruner=median` etc. turn it on.
    defaults: List[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": "nop"}])

    sampler: Any = None
    pruner: Any = None
    # Total trials of the study: completed + pruned trials count, also across resumes.
    n_trials: int = 20
    # fast (default): every trial on all training rows, several trials at once (n_jobs from the
    # machine), searching `params` (sweep=lightgbm: a space with small trees and strong
    # regularization, where on the benchmarks the best models were found fastest).
    # halving: as fast, and each configuration trains on min_fraction of the training rows,
    # then reduction_factor times more up to all rows while it stays in the best
    # 1/reduction_factor of its rung (asynchronous successive halving; it lost the optimum
    # on the flights table, benchmarks/README.md). Runs as fast, said once, with a pruner of
    # its own, a grid, several objectives, custom_search_space, or too few training rows.
    # plain: the sweep before issue 26: one trial at a time unless n_jobs is set, searching
    # `plain_params` when set (else `params`); with n_jobs 1 exactly reproducible.
    strategy: str = "fast"
    min_fraction: float = 0.0625
    reduction_factor: int = 4
    # Trials at once, a new one starting as soon as one ends (LightGBM threads split between
    # them). null: 1 under strategy=plain and with a Hydra launcher; otherwise min(4, cores),
    # or 1 with every core once the training table turns out to be read in batches.
    n_jobs: Optional[int] = None
    # Seconds after which no new trial starts (null: no limit).
    timeout: Optional[float] = None
    # "maximize"/"minimize", or a list of them (multi-objective, with a list of metrics);
    # null: from the metric (auc/accuracy/r2/f1 maximize, losses minimize).
    direction: Any = None
    # Metric(s) of the job to optimize; null: valid_<headline metric> (valid_auc for binary).
    metric: Any = None
    # Optuna storage URL (sqlite:///..., postgresql://..., journal:PATH); null: a SQLite
    # file .runner/optuna/<study_name>.db under the current directory.
    storage: Optional[str] = None
    # null: runner-<sweep config name> (or runner-<tracker.experiment>).
    study_name: Optional[str] = None
    # Search space in Hydra's override grammar, e.g. int(interval(15, 255)).
    params: Optional[Dict[str, str]] = None
    # The space strategy=plain searches instead of params, when set (sweep=lightgbm: the
    # space it searched before issue 26, so that strategy=plain is that sweep unchanged).
    plain_params: Optional[Dict[str, str]] = None
    # The first trials of a new study, before the sampler's own (Optuna's study.enqueue_trial):
    # a list of {param: value} inside `params` (a param left out is sampled). Not used when
    # strategy=plain searches plain_params. sweep=lightgbm: a small-tree and a large-tree start.
    enqueue_trials: Optional[List[Dict[str, Any]]] = None
    # Boosting rounds between two pruning reports.
    report_every: int = 1
    # Model Registry name for the best trial's model (null: tracker.registered_model, else the
    # experiment's name; tracker.register=false turns registration off).
    registered_model: Optional[str] = None
    # Rows of the top-trials table and the summary.
    top_k: int = 5
    # Stop after this many failed trials in one invocation (0: never).
    max_failures: int = 5
    # hydra-optuna-sweeper's setting, accepted as it is: stop once more than this share of
    # this invocation's trials failed (0.0: at the first failure; null: only max_failures).
    max_failure_rate: Optional[float] = None
    # hydra-optuna-sweeper's hook: "module.function" called as fn(cfg, trial) on each trial
    # to suggest more params (conditional ones); new config keys as "+key".
    custom_search_space: Optional[str] = None
    # A RUNNING trial whose owner (pid on this host) is gone, or whose heartbeat is older
    # than this many seconds, is stale: failed on resume.
    heartbeat_timeout: float = 600.0
    heartbeat_interval: float = 30.0
    # Print a progress line on stderr after each trial.
    progress: bool = True


SAMPLERS = {
    "tpe": TPESamplerConfig,
    "random": RandomSamplerConfig,
    "cmaes": CmaEsSamplerConfig,
    "gp": GPSamplerConfig,
    "qmc": QMCSamplerConfig,
    "nsgaii": NSGAIISamplerConfig,
    "grid": GridSamplerConfig,
    "motpe": MOTPESamplerConfig,
}
PRUNERS = {
    "median": MedianPrunerConfig,
    "hyperband": HyperbandPrunerConfig,
    "successive_halving": SuccessiveHalvingPrunerConfig,
    "patient": PatientPrunerConfig,
    "wilcoxon": WilcoxonPrunerConfig,
    "nop": NopPrunerConfig,
    "none": NopPrunerConfig,
}


def register() -> None:
    cs = ConfigStore.instance()
    # Also under hydra-optuna-sweeper's name, so configs written for it (`override
    # /hydra/sweeper: optuna`) run on this sweeper: that plugin pins optuna<3 and cannot be
    # installed beside runner anyway.
    for name in ("runner_optuna", "optuna"):
        cs.store(group="hydra/sweeper", name=name, node=RunnerOptunaSweeperConf, provider="runner_optuna_sweeper")
    for name, node in SAMPLERS.items():
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider="runner_optuna_sweeper")
    for name, node in PRUNERS.items():
        cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="runner_optuna_sweeper")


register()
