"""Does a runner sweep cost less than the Optuna loop it replaces? (issues 5 and 15)

Runs every variant (bare, bare-reuse, bare-fluent, runner-local, runner-server,
runner-cached), alternating, --reps times each, and prints a table of medians (min-max),
each variant timed twice: its loop and its whole process (spawn to exit), with ratios to
`bare` and `bare-reuse` measured in the same run. What each variant is and what is
measured: benchmarks/README.md.

  python benchmarks/bench.py                       # the full workload, 3 reps
  python benchmarks/bench.py --reps 5 --out bench.md --json bench.json
  python benchmarks/bench.py --rows 2000 --features 5 --trials 3 --rounds 10 --reps 1   # smoke size
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parent.parent
# Run as a script from anywhere: the repo root (runner, hydra_plugins, benchmarks) first.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._measure import Proc, load_average, run_measured  # noqa: E402
from benchmarks._report import Result, machine, render, summarize  # noqa: E402
from benchmarks._targets import comparisons, sweep_variant, targets  # noqa: E402

VARIANTS = ("bare", "bare-reuse", "bare-fluent", "runner-local", "runner-server", "runner-cached")


def _env() -> Dict[str, str]:
    from runner.env import PARENT_RUN_ID

    env = dict(os.environ)
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", PARENT_RUN_ID, "HYDRA_FULL_ERROR"):
        env.pop(key, None)
    # runner turns MLflow's usage telemetry off itself; the fluent hand loop gets the same.
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def run_order(variants: List[str], rep: int) -> List[str]:
    """One repetition's order: the judged sweep and bare-reuse last and back to back, which
    of them first alternating by repetition, so the machine's drift hits both alike (the
    targets compare them within a repetition). runner-cached stays after runner-local."""
    pair = ["bare-reuse", sweep_variant(variants)]
    if not all(v in variants for v in pair):
        return list(variants)
    rest = [v for v in variants if v not in pair]
    return rest + (pair if rep % 2 == 0 else pair[::-1])


class Bench:
    def __init__(self, args):
        self.a = args
        self.work = Path(args.workdir or tempfile.mkdtemp(prefix="runner-bench-")).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.env = _env()
        self.server = None
        self.proxy = None
        self.bare_parquet: Optional[str] = None
        self.workload_path = self.work / "workload.json"
        self.results: List[Result] = []
        self.cold: Dict[str, List[float]] = {"runner --help": [], "import mlflow, optuna, lightgbm": []}
        self.tracking_dir = self.work / "mlruns"
        self.tracking_uri = f"sqlite:///{self.tracking_dir / 'mlflow.db'}"

    def log(self, text: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    # setup (untimed) ---------------------------------------------------------

    def setup(self) -> None:
        """Untimed: the bare loops' features and workload, the local tracking store and the
        mlflow server, prepared side by side."""
        a = self.a
        self.log(f"work dir {self.work}")
        jobs = {}
        if any(v.startswith("bare") for v in a.variants):
            self.log("pulling the features once for the bare loops")
            jobs["pull"] = self._spawn(
                [
                    sys.executable,
                    str(SCRIPT),
                    "--child",
                    "pull",
                    "--rows",
                    str(a.rows),
                    "--features",
                    str(a.features),
                    "--cache-dir",
                    str(self.work / "bare-cache"),
                ],
                "setup-pull",
            )
            from benchmarks._loops import workload

            # The search space (conf/sweep/lightgbm.yaml) and split (conf/data/synthetic.yaml),
            # parsed here once so the measured bare child does not import Hydra.
            self.workload_path.write_text(json.dumps(workload(), indent=1))
        if any(v in a.variants for v in ("bare-fluent", "runner-local", "runner-cached")):
            # The tracking store exists before the sweeps, as on any machine that ran runner
            # before: its one-time creation (SQLite migrations) is not part of a sweep.
            self.log("creating the local tracking store")
            code = (
                "from mlflow import MlflowClient; import sys; "
                "MlflowClient(tracking_uri=sys.argv[1]).search_experiments()"
            )
            jobs["store"] = self._spawn([sys.executable, "-c", code, self.tracking_uri], "setup-store")
        if "runner-server" in a.variants:
            from benchmarks._servers import CountingProxy, MlflowServer

            self.log("starting mlflow server (--workers 1) behind a request-counting proxy")
            self.server = MlflowServer(self.work / "mlflow-server").start()
            self.proxy = CountingProxy(self.server.url).start()
        for name, (proc, folder) in jobs.items():
            if proc.wait() != 0:
                raise SystemExit(
                    f"bench: setup step {name} failed (exit {proc.returncode}):\n"
                    f"{(folder / 'stderr.txt').read_text(errors='replace')[-4000:]}"
                )
        if "pull" in jobs:
            out = (jobs["pull"][1] / "stdout.txt").read_text()
            self.bare_parquet = json.loads(out.strip().splitlines()[-1])["path"]

    def _spawn(self, cmd: List[str], name: str):
        folder = self.work / name
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "stdout.txt", "wb") as out, open(folder / "stderr.txt", "wb") as err:
            return subprocess.Popen(cmd, cwd=folder, env=self.env, stdout=out, stderr=err), folder

    def _profiled(self, cmd: List[str], cwd: Path) -> List[str]:
        """--profile: the same command under cProfile (every thread), its stats in
        <cwd>/profile.pstats; read call counts, the profiler distorts the timings."""
        if not self.a.profile:
            return cmd
        return [cmd[0], str(SCRIPT.parent / "_profile.py"), str(cwd / "profile.pstats"), *cmd[1:]]

    def teardown(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        if self.server is not None:
            self.server.stop()
        if not self.a.keep and not self.a.workdir:
            shutil.rmtree(self.work, ignore_errors=True)

    def _check(self, p: Proc, what: str) -> None:
        if p.returncode != 0:
            raise SystemExit(f"bench: {what} failed (exit {p.returncode}):\n{p.stderr[-4000:]}\n{p.stdout[-2000:]}")

    # variants ----------------------------------------------------------------

    def run_bare(self, variant: str, rep: int) -> Result:
        a = self.a
        cmd = [sys.executable, str(SCRIPT), "--child", "bare", "--parquet", str(self.bare_parquet)]
        cmd += ["--workload", str(self.workload_path), "--trials", str(a.trials), "--rounds", str(a.rounds)]
        cmd += ["--threads", str(a.threads), "--sampler", a.sampler]
        if variant in ("bare-reuse", "bare-fluent"):
            cmd.append("--reuse")
        if variant == "bare-fluent":  # the same local store as runner-local, an experiment per rep
            cmd += ["--tracking-uri", self.tracking_uri, "--experiment", f"bench-{variant}-{rep}"]
        p = run_measured(self._profiled(cmd, self.work / f"{variant}-{rep}"), self.work / f"{variant}-{rep}", self.env)
        self._check(p, variant)
        out = json.loads(p.stdout.strip().splitlines()[-1])
        return Result(
            variant,
            rep,
            loop=out["loop_seconds"],
            process=p.wall,
            trials=out["trials"],
            best_auc=out["best_auc"],
            peak_tree=p.peak_tree,
            peak_main=p.peak_main,
            feature_queries=0,
            trial_seconds=out["trial_seconds"],
            startup=out["first_trial_start"] - p.spawned,
            teardown=p.spawned + p.wall - out["last_trial_end"],
        )

    def runner_cmd(self, extra: List[str]) -> List[str]:
        a = self.a
        return [
            sys.executable,
            "-m",
            "runner",
            "--multirun",
            "sweep=lightgbm",
            "data=synthetic",
            f"data.demo.rows={a.rows}",
            f"data.demo.n_features={a.features}",
            f"model.num_boost_round={a.rounds}",
            "model.early_stopping_rounds=0",
            f"model.params.num_threads={a.threads}",
            f"hydra.sweeper.n_trials={a.trials}",
            f"hydra/sweeper/sampler={a.sampler}",
            "hydra.sweeper.sampler.seed=0",
            "hydra/sweeper/pruner=nop",
            "hydra.sweeper.strategy=plain",  # the loop it replaces: every trial on all rows
            "hydra.sweeper.study_name=bench",
            *extra,
        ]

    def run_runner(self, variant: str, rep: int) -> Result:
        cwd = self.work / f"{variant}-{rep}"
        # runner-cached reads the cache runner-local of the same repetition filled.
        cache = self.work / f"runner-local-{rep}" / "cache" if variant == "runner-cached" else cwd / "cache"
        if variant == "runner-cached" and not cache.exists():
            raise SystemExit("bench: runner-cached needs runner-local in the same run")
        extra = [f"data.cache_dir={cache}"]
        if variant == "runner-server":
            extra += ["tracker=server", f"tracker.uri={self.proxy.url}", f"tracker.experiment=bench-{rep}"]
            self.proxy.reset_counts()
        else:
            extra += [f"tracker.dir={self.tracking_dir}", f"tracker.experiment=bench-{variant}-{rep}"]
        p = run_measured(self._profiled(self.runner_cmd(extra), cwd), cwd, self.env)
        self._check(p, variant)
        m = re.search(r"(\d+) feature queries", p.stdout)
        loop = re.search(r"trial loop ([\d.]+)s", p.stdout)
        if loop is None:
            raise SystemExit(f"bench: {variant} printed no 'trial loop Xs':\n{p.stdout[-2000:]}")
        best, trials, first, last = self._study(cwd / ".runner" / "optuna" / "bench.db")
        r = Result(
            variant,
            rep,
            loop=float(loop.group(1)),
            process=p.wall,
            trials=trials,
            best_auc=best,
            peak_tree=p.peak_tree,
            peak_main=p.peak_main,
            feature_queries=int(m.group(1)) if m else None,
            trial_seconds=[float(x) for x in re.findall(r"\] trial \d+ .*? in ([\d.]+)s \|", p.stderr)],
            startup=first - p.spawned,
            teardown=p.spawned + p.wall - last,
        )
        if variant == "runner-server":
            from benchmarks._servers import count_requests

            r.requests_total, r.requests_trials, r.requests_by_endpoint = count_requests(self.proxy.bodies)
        return r

    def _study(self, path: Path):
        """best value, COMPLETE trials, first trial's start and last trial's end (epoch s)."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name="bench", storage=f"sqlite:///{path}")
        done = [t for t in study.trials if t.state.name == "COMPLETE"]
        first = min(t.datetime_start for t in study.trials).timestamp()
        last = max(t.datetime_complete for t in study.trials if t.datetime_complete).timestamp()
        return (study.best_value if done else None), len(done), first, last

    def cold_start(self) -> None:
        cmds = {
            "runner --help": [sys.executable, "-m", "runner", "--help"],
            "import mlflow, optuna, lightgbm": [sys.executable, "-c", "import mlflow, optuna, lightgbm"],
        }
        for _ in range(self.a.cold_reps):
            for name, cmd in cmds.items():
                p = run_measured(cmd, self.work / "cold", self.env)
                self._check(p, name)
                self.cold[name].append(p.wall)

    def run(self) -> None:
        a = self.a
        try:
            self.setup()
            self.log("cold start")
            self.cold_start()
            for rep in range(a.reps):
                for variant in run_order(a.variants, rep):
                    self.log(f"rep {rep + 1}/{a.reps}: {variant}")
                    r = self.run_bare(variant, rep) if variant.startswith("bare") else self.run_runner(variant, rep)
                    self.results.append(r)
                    self.log(
                        f"  {variant}: loop {r.loop:.1f}s, process {r.process:.1f}s, best auc {r.best_auc}, "
                        f"peak rss {r.peak_tree / 2**20:.0f} MB"
                        + (
                            f", {r.requests_total} requests ({r.requests_trials} for trials)"
                            if r.requests_total is not None
                            else ""
                        )
                        + f", load {load_average()}"
                    )
                    if a.json:  # partial results survive an interrupted run
                        Path(a.json + ".partial").write_text(
                            json.dumps(
                                {"cold_start": self.cold, "results": [x.__dict__ for x in self.results]}, default=str
                            )
                        )
        finally:
            self.teardown()


# ------------------------------------------------------------------ main


def parse(argv=None):
    p = argparse.ArgumentParser(
        prog="python benchmarks/bench.py",
        description=__doc__.split("\n\n")[0],
        epilog="Variants, measurements and the smoke size: benchmarks/README.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--reps", type=int, default=3, help="repetitions of each variant (default 3)")
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--features", type=int, default=50)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--sampler", choices=("tpe", "random"), default="tpe", help="Optuna's sampler, seed 0 (default tpe)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="LightGBM num_threads (default: cores)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    p.add_argument("--cold-reps", type=int, default=3, help="repetitions of the cold-start measurement")
    p.add_argument("--out", help="also write the table as markdown to this file")
    p.add_argument("--json", help="write every measurement as JSON to this file")
    p.add_argument("--workdir", help="keep everything under this folder (default: a temp folder, removed)")
    p.add_argument("--keep", action="store_true", help="keep the temp folder")
    p.add_argument(
        "--profile",
        action="store_true",
        help="run every variant under cProfile (<workdir>/<variant>-<rep>/profile.pstats); timings then mean nothing",
    )
    # internal: the child processes of the bare variants
    p.add_argument("--child", choices=("bare", "pull"), help=argparse.SUPPRESS)
    p.add_argument("--parquet", help=argparse.SUPPRESS)
    p.add_argument("--workload", help=argparse.SUPPRESS)
    p.add_argument("--reuse", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    p.add_argument("--tracking-uri", help=argparse.SUPPRESS)
    p.add_argument("--experiment", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if "runner-cached" in args.variants and "runner-local" not in args.variants:
        p.error("runner-cached needs runner-local (it reads the cache runner-local fills)")
    if args.reps < 1 or args.trials < 1 or args.rounds < 1:
        p.error("--reps, --trials and --rounds must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.child:
        from benchmarks._loops import child_bare, child_pull

        out = child_bare(args) if args.child == "bare" else child_pull(args)
        print(json.dumps(out), flush=True)
        return 0
    load = {"start": load_average()}
    bench = Bench(args)
    bench.run()
    load["end"] = load_average()
    rows = summarize(bench.results, args.variants, args.trials)
    checks = targets(rows, bench.cold)
    info = machine()
    notes = comparisons(rows)
    print(render(rows, checks, bench.cold, info, args, load, markdown=False, notes=notes), flush=True)
    if args.out:
        Path(args.out).write_text(render(rows, checks, bench.cold, info, args, load, markdown=True, notes=notes))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "args": {
                        k: v
                        for k, v in vars(args).items()
                        if not k.startswith(
                            ("child", "parquet", "workload", "reuse", "cache", "tracking", "experiment")
                        )
                    },
                    "rows": rows,
                    "targets": checks,
                    "comparisons": notes,
                    "cold_start": bench.cold,
                    "machine": info,
                    "load": load,
                    "results": [r.__dict__ for r in bench.results],
                },
                indent=1,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
