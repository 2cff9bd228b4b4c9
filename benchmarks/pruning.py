"""Is pruning worth having by default? (issue 15, part 4)

For each sampler seed, runs the default sweep (its default sampler and pruner) and the
same sweep without pruning (hydra/sweeper/pruner=nop), plus any other candidate pruners,
on the benchmark's workload (`python -m runner --multirun sweep=lightgbm data=synthetic`),
one after the other, each with its own study, and reads from each study's Optuna storage:
best-so-far against seconds (trial ends relative to the first trial's start) and against
boosting rounds trained (a pruned trial counts the rounds it reported; noise-free, unlike
seconds on a shared machine). Prints, per candidate and seed, the final best against the
no-pruning sweep's, the time and rounds it took to reach the no-pruning final best (within
--tolerance) as a share of the no-pruning sweep's, and whether the rule holds:

  reaches nop's final best (within 0.0005) in <= half of nop's wall time, and its own
  final best is no worse than nop's beyond the seed-to-seed noise.

Writes results.json, results.md and best_so_far.png (best-so-far vs seconds and vs rounds,
every candidate and seed) into --out.

  python benchmarks/pruning.py --out pruning-out                       # default vs nop, seeds 0,1,2
  python benchmarks/pruning.py --out p --candidates default,nop,median-w50,patient,hyperband
  python benchmarks/pruning.py --out p --rows 2000 --features 5 --trials 4 --rounds 20 --seeds 0  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._pruning_report import analyse, plot, render  # noqa: E402

# Candidate name -> the overrides that select it (the default sweep gets none).
CANDIDATES: Dict[str, List[str]] = {
    "default": [],
    "nop": ["hydra/sweeper/pruner=nop"],
    "median": ["hydra/sweeper/pruner=median"],
    "median-w10": ["hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_warmup_steps=10"],
    "median-w30": ["hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_warmup_steps=30"],
    "median-w50": ["hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_warmup_steps=50"],
    "median-w70": ["hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_warmup_steps=70"],
    "patient": ["hydra/sweeper/pruner=patient"],
    "wilcoxon": ["hydra/sweeper/pruner=wilcoxon"],
    "hyperband": ["hydra/sweeper/pruner=hyperband"],
    "hyperband-r25": ["hydra/sweeper/pruner=hyperband", "hydra.sweeper.pruner.min_resource=25"],
    "sh": ["hydra/sweeper/pruner=successive_halving"],
    "sh-r25": ["hydra/sweeper/pruner=successive_halving", "hydra.sweeper.pruner.min_resource=25"],
}


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "HYDRA_FULL_ERROR"):
        env.pop(key, None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def sweep_cmd(a, name: str, seed: int, overrides: List[str], out: Path) -> List[str]:
    study = f"prune-{name}-s{seed}"
    return [
        sys.executable,
        "-m",
        "runner",
        "--multirun",
        "sweep=lightgbm",
        "data=synthetic",
        f"data.demo.rows={a.rows}",
        f"data.demo.n_features={a.features}",
        f"data.cache_dir={out / 'cache'}",
        f"model.num_boost_round={a.rounds}",
        f"model.early_stopping_rounds={a.early_stopping}",
        f"model.params.num_threads={a.threads}",
        f"hydra.sweeper.n_trials={a.trials}",
        f"hydra.sweeper.sampler.seed={seed}",
        "hydra.sweeper.strategy=plain",  # pruning on boosting rounds, every trial on all rows
        f"hydra.sweeper.study_name={study}",
        f"hydra.sweeper.storage=sqlite:///{out / 'studies' / (study + '.db')}",
        f"tracker.dir={out / 'mlruns'}",
        f"tracker.experiment={study}",
        "tracker.register=false",
        *overrides,
        *a.extra,
    ]


def default_pruner() -> str:
    """The pruner option the default sweep gets: conf/sweep/lightgbm.yaml's
    `override /hydra/sweeper/pruner`, else the sweeper's own default (config.py)."""
    from omegaconf import OmegaConf

    from hydra_plugins.runner_optuna_sweeper.config import RunnerOptunaSweeperConf

    for item in OmegaConf.load(REPO / "conf" / "sweep" / "lightgbm.yaml").get("defaults", []):
        if isinstance(item, dict) or OmegaConf.is_dict(item):
            for key, value in dict(item).items():
                if key.split()[-1].strip("/") == "hydra/sweeper/pruner":
                    return str(value)
    for item in RunnerOptunaSweeperConf().defaults:
        if isinstance(item, dict) and "pruner" in item:
            return str(item["pruner"])
    return "nop"


def same_as_default(table: Dict[str, List[str]]) -> Optional[str]:
    """A candidate that is the default sweep under another name (e.g. nop, once the default
    pruner is nop): its runs stand for the default's, which is not run twice."""
    from hydra_plugins.runner_optuna_sweeper.config import PRUNERS

    default = PRUNERS.get(default_pruner())
    for name, overrides in table.items():
        if name != "default" and len(overrides) == 1 and overrides[0].startswith("hydra/sweeper/pruner="):
            if PRUNERS.get(overrides[0].split("=", 1)[1]) is default:
                return name
    return None


def run_sweep(a, name: str, seed: int, overrides: List[str], out: Path) -> Dict[str, Any]:
    study = f"prune-{name}-s{seed}"
    path = out / "studies" / f"{study}.db"
    cwd = out / "runs" / study
    if a.reuse and path.exists() and (cwd / "done").exists():
        return {"study": study, "storage": f"sqlite:///{path}", "process": json.loads((cwd / "done").read_text())}
    path.unlink(missing_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(cwd / "stdout.txt", "wb") as so, open(cwd / "stderr.txt", "wb") as se:
        rc = subprocess.call(sweep_cmd(a, name, seed, overrides, out), cwd=cwd, env=_env(), stdout=so, stderr=se)
    process = time.perf_counter() - started
    if rc != 0:
        raise SystemExit(f"pruning: {study} failed (exit {rc}):\n{(cwd / 'stderr.txt').read_text()[-3000:]}")
    (cwd / "done").write_text(json.dumps(process))
    return {"study": study, "storage": f"sqlite:///{path}", "process": process}


def parse(argv=None):
    p = argparse.ArgumentParser(
        prog="python benchmarks/pruning.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="candidates: " + ", ".join(CANDIDATES) + "; or NAME='override override ...'",
    )
    p.add_argument("--out", required=True, help="output folder (runs, studies, results, plot)")
    p.add_argument("--seeds", default="0,1,2", help="sampler seeds (default 0,1,2)")
    p.add_argument(
        "--candidates",
        default="default,nop",
        help="comma-separated names (see below); 'nop' is always run: it is the reference",
    )
    p.add_argument(
        "--candidate",
        action="append",
        default=[],
        metavar="NAME=OVERRIDES",
        help="add a candidate: a name and its space-separated overrides (repeatable)",
    )
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--features", type=int, default=50)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--early-stopping", type=int, default=0, help="model.early_stopping_rounds (benchmark: 0)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--tolerance", type=float, default=0.0005, help="'reaches nop's final best' within this")
    p.add_argument("--reuse", action="store_true", help="keep sweeps already finished in --out (resume)")
    p.add_argument("extra", nargs="*", help="more overrides for every sweep")
    a = p.parse_args(argv)
    a.seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    names = [c.strip() for c in a.candidates.split(",") if c.strip()]
    a.table = {}
    for name in ["nop", *names]:
        if name not in CANDIDATES:
            p.error(f"unknown candidate {name!r}; known: {', '.join(CANDIDATES)} (or --candidate NAME=...)")
        a.table[name] = CANDIDATES[name]
    for spec in a.candidate:
        name, _, overrides = spec.partition("=")
        if not name.strip() or not overrides.strip():
            p.error(f"--candidate {spec!r}: want NAME='override override ...'")
        a.table[name.strip()] = overrides.split()
    return a


def main(argv=None) -> int:
    a = parse(argv)
    out = Path(a.out).resolve()
    (out / "studies").mkdir(parents=True, exist_ok=True)
    runs: Dict[str, Dict[int, Dict[str, Any]]] = {name: {} for name in a.table}
    alias = same_as_default(a.table) if "default" in a.table else None
    if alias:
        print(
            f"[pruning] the default sweep's pruner is {default_pruner()!r}: {alias}'s runs are the default's",
            file=sys.stderr,
        )
    for seed in a.seeds:  # seed-major: a noisy period of the machine hits every candidate alike
        for name, overrides in a.table.items():
            if name == "default" and alias:
                continue
            print(f"[pruning {time.strftime('%H:%M:%S')}] seed {seed}: {name} {' '.join(overrides)}", file=sys.stderr)
            runs[name][seed] = run_sweep(a, name, seed, overrides, out)
    if alias:
        runs["default"] = runs[alias]
    results = analyse(runs, a)
    text, md = render(results, a, markdown=False), render(results, a, markdown=True)
    print(text)
    (out / "results.md").write_text(md)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    png: Optional[Path] = plot(results, out / "best_so_far.png")
    if png is not None:
        print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
