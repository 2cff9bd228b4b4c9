"""Peak memory of runner and of its embedded warehouse, per case, on large tables (issue 28).

Each case is one `python -m runner` process (a single run, or a sweep), started in a working
folder of its repetition (<workdir>/rep-K: the tracker's default local store lands there),
with the feature cache in a folder of its own:

  cold          python -m runner data=synthetic data.demo.rows=N data.demo.n_features=F
                data.cache_dir=<rep>/cache, the cache empty: the features are pulled from the
                embedded warehouse (seeded with N x F rows: conf/data/synthetic.yaml).
  warm          the same command again on the same cache (a hit; runner finds it through the
                cache's index without starting the warehouse). Without `cold` in --mode, an
                unmeasured run fills the cache first.
  sweep         python -m runner --multirun sweep=lightgbm hydra.sweeper.n_trials=T
                hydra.sweeper.sampler.seed=0 model.num_boost_round=R (--sweep-rounds, 50) ...
                on the warm cache (the seeded one if seeded-cache is in --mode).
  seeded-cache  the single run's command on a cache entry written by this script instead of
                pulled (below), for tables the embedded warehouse cannot hold (20,000,000 x 100
                doubles is 16 GB in Arrow). The run must find a cache hit and never start the
                warehouse: if a warehouse process appears under it, it is killed at once and
                the case is reported as failed (a miss would seed N rows in the warehouse).

Per case it prints (and with --out appends as JSON lines): rows, features, mode, runner's
peak RSS, the embedded warehouse's peak RSS (- when it was not started), wall seconds from
spawn to exit, the phase seconds runner reports (the run's own "FINISHED in", the sweep's
"trial loop", and every *_seconds metric of the runs in the local MLflow store, e.g.
features_seconds), the cache outcome and the exit code; the load average at the start and
end of each case and of the whole invocation, and the commit of the runner under test
(+dirty when its tracked files differ from it).

  python benchmarks/memory_large.py                                   # 50,000 x 20, cold (smoke size)
  python benchmarks/memory_large.py --rows 2000000 --features 50 --mode cold,warm,sweep --reps 3 --out m.jsonl
  python benchmarks/memory_large.py --rows 20000000 --features 100 --mode seeded-cache,sweep --workdir /work/m28
  python benchmarks/memory_large.py --repo /work/before ...             # another checkout (PYTHONPATH=it)

Peak RSS. runner's process: os.wait4 on it gives ru_maxrss at its exit, exact, but Linux reports
there the larger of the process's own peak and that of every child it reaped (the embedded
warehouse is one), so it is used only when it exceeds every descendant's observed peak; else
runner's own VmHWM from /proc/<pid>/status, polled every --interval seconds (0.1), is reported
(the peak_source field says which). The warehouse (`python -m runner.embedded.server`, a child
of runner) and other descendants: their VmHWM, polled the same way. VmHWM is a high-water mark,
so a poll misses only what grew in the last interval before the process exited (a stopping
server does not grow; /proc has no VmHWM for a zombie, so it cannot be read after the exit).
Memory does not depend on timing: a busy machine changes the seconds, not the peaks.

The seeded cache (--mode seeded-cache), made before the repetitions (untimed):

1. A probe: a real `python -m runner` single run with the same data settings (and --extra)
   except data.demo.rows=--probe-rows (1,000), in a cache of its own: the embedded warehouse
   seeds 1,000 rows, runner pulls them and writes the entry and its two index files.
2. A child process with runner on PYTHONPATH (--repo) recomputes the key derivation and checks
   it against the probe: runner/data/pull.py keys an entry by cache_key({"sql", "identity",
   "version"}): the SQL Snowpark generates for the feature definition, ending in an ORDER BY
   of the entity key (`select * from (SELECT * FROM SYNTH) order by ID asc nulls last` today;
   no row count in it), the warehouse's identity (account fakesnow, DEMO, PUBLIC) and the data
   version, for the embedded warehouse the digest of its seed script ("seed:" + sha256 of
   runner.embedded.synthetic.synthetic_sql's statements, which hold rows, n_features and seed).
   The probe's sql and identity are read from its entry's metadata; the child checks that the
   recomputed version and key equal the probe's, and that config_digest / embedded_digest
   (runner/data/offline.py) of the probe's data config, composed from conf/ as `python -m
   runner` composes it, name the probe's index files. Then it computes the version, key and
   digests for N rows the same way. No warehouse ever holds N rows.
3. The rows: the seed script's own SELECT (its generator replaced by one batch of IDs,
   seq8() + first ID, --seed-batch-rows at a time) run by fakesnow's in-process engine (the
   same sqlglot transforms and duckdb as the embedded warehouse, no server), so every value is
   the warehouse's: the same hash() per ID, in ID order (the pull's ORDER BY), float64
   features F1..Fn, Y int32 and ID decimal128(38, 0) as the connector returns them, cast to
   the probe entry's exact Arrow schema (with the connector's field metadata). The batches
   are cut where the embedded server cuts a result into chunks (runner.embedded.server.Chunks:
   256 KiB doubling to 16 MiB), the pieces the connector hands the pull, so the Parquet row
   groups come out as a pull's. Checked first on the probe: its rows generated this way and
   written through FeatureCache.put must equal the pulled entry (schema, values, row groups).
   It streams: one batch (~40 MB at 100 features) and one pending row group at a time.
4. The entry: FeatureCache.put(key, batches, meta) under cache.lock(key), as runner/data/pull.py
   writes it (runner/data/entry.py write_entry: Parquet with page checksums, runner's metadata
   and the row-count record), meta = the probe's source with the version for N rows, no query
   ids (no query ran) and a "seeded" note; then FeatureCache.remember for both digests, as a
   pull does, which is how a run on the embedded warehouse finds it without starting the
   warehouse. An entry already there under that key (same --workdir) is reused.

Checked once at 100,000 x 100 (`--mode cold,seeded-cache`): the pulled and the seeded entry had
the same key, schema (field metadata included), values, row groups and index files; only the
metadata's query_ids (and the note) differ. Limits: the embedded digest covers the source of
runner's pull code (runner/data/offline.py _FEATURE_CODE), so editing runner between the
seeding and a run leaves the entry unreachable (the run is then killed, not left to seed N
rows); a sweep whose data config differs from the single run's (e.g. a data.sample drawn in
the warehouse) needs an entry of its own, which this script does not make.

Writing 20,000,000 x 100 takes ~16 GB of disk (checked before writing) and several minutes.
The runs use the venv's python (sys.executable) with PYTHONPATH=--repo and no MLFLOW_* variables.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parent.parent
MODES = ("cold", "warm", "sweep", "seeded-cache")
MB = 1 << 20
WAREHOUSE = b"runner.embedded.server"


if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._rss import cache_outcome, commit_of, measure, phases  # noqa: E402


def log(text: str) -> None:
    print(f"[memory {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass
class Case:
    mode: str
    rep: int
    rows: int
    features: int
    exit_code: Optional[int] = None
    runner_peak_mb: Optional[float] = None
    warehouse_peak_mb: Optional[float] = None
    wall_seconds: Optional[float] = None
    phases: Dict[str, float] = field(default_factory=dict)
    cache: str = "?"
    warehouse_started: Optional[bool] = None
    peak_source: str = ""
    runner_hwm_polled_mb: Optional[float] = None
    wait4_maxrss_mb: Optional[float] = None
    other_children_peak_mb: Optional[float] = None
    other_children_largest: str = ""
    trials: Optional[int] = None
    load_start: str = ""
    load_end: str = ""
    killed: Optional[str] = None
    cwd: str = ""
    cmd: List[str] = field(default_factory=list)


class Bench:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.repo = Path(a.repo).resolve()
        self.work = Path(a.workdir or tempfile.mkdtemp(prefix="runner-memory28-")).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        for key in ("HYDRA_FULL_ERROR", "RUNNER_PARENT_RUN_ID", "PYTHONPATH"):
            self.env.pop(key, None)
        self.env["PYTHONPATH"] = str(self.repo)
        self.commit = commit_of(self.repo)
        self.cases: List[Case] = []
        self.seed_record: Optional[Dict[str, Any]] = None

    # commands ------------------------------------------------------------------

    def data_args(self, rows: int, cache: Path) -> List[str]:
        a = self.a
        return [
            "data=synthetic",
            f"data.demo.rows={rows}",
            f"data.demo.n_features={a.features}",
            f"data.cache_dir={cache}",
        ]

    def single(self, rows: int, cache: Path, run_dir: Path) -> List[str]:
        return [
            sys.executable,
            "-m",
            "runner",
            *self.data_args(rows, cache),
            *self.a.extra,
            f"hydra.run.dir={run_dir}",
        ]

    def sweep(self, cache: Path, run_dir: Path) -> List[str]:
        a = self.a
        return [
            sys.executable,
            "-m",
            "runner",
            "--multirun",
            "sweep=lightgbm",
            f"hydra.sweeper.n_trials={a.trials}",
            "hydra.sweeper.sampler.seed=0",
            f"model.num_boost_round={a.sweep_rounds}",
            *self.data_args(a.rows, cache),
            *self.a.extra,
            *self.a.sweep_extra,
            f"hydra.sweep.dir={run_dir}",
        ]

    # running -------------------------------------------------------------------

    def run_case(self, mode: str, rep: int, cmd: List[str], cwd: Path, forbid_warehouse: bool = False) -> Case:
        a = self.a
        case = Case(mode, rep, a.rows, a.features, trials=a.trials if mode == "sweep" else None)
        case.cwd, case.cmd, case.load_start = str(cwd), cmd, load_average()
        log(f"rep {rep}: {mode} ({a.rows:,} x {a.features}), load {case.load_start}")
        m = measure(cmd, cwd, cwd / f"{mode}.out", self.env, a.interval, a.timeout, forbid_warehouse)
        case.load_end = load_average()
        case.exit_code, case.wall_seconds, case.killed = m.exit_code, round(m.wall, 2), m.killed
        case.runner_peak_mb, case.peak_source = round(m.runner_peak / MB, 1), m.peak_source
        case.runner_hwm_polled_mb = round(m.runner_hwm_polled / MB, 1)
        case.wait4_maxrss_mb = round(m.wait4_maxrss / MB, 1)
        case.warehouse_peak_mb = None if m.warehouse_peak is None else round(m.warehouse_peak / MB, 1)
        case.warehouse_started = m.warehouse_peak is not None
        case.other_children_peak_mb, case.other_children_largest = round(m.other_peak / MB, 1), m.other_cmd
        case.phases, case.cache = phases(m), cache_outcome(m)
        if m.exit_code != 0:
            tail = m.stderr.strip().splitlines()[-8:]
            log(f"  {mode} exited {m.exit_code}{' (' + m.killed + ')' if m.killed else ''}: " + "\n  ".join(tail))
        log(
            f"  {mode}: runner {case.runner_peak_mb:.0f} MB ({case.peak_source}), warehouse "
            f"{'-' if case.warehouse_peak_mb is None else f'{case.warehouse_peak_mb:.0f} MB'}, "
            f"{case.wall_seconds:.1f} s, cache {case.cache}, exit {case.exit_code}, load {case.load_end}"
        )
        self.cases.append(case)
        self.write_json(asdict(case))
        return case

    def write_json(self, record: Dict[str, Any]) -> None:
        """One JSON line appended to --out (partial results survive an interrupted run)."""
        if self.a.out:
            with open(self.a.out, "a") as fh:
                head = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "commit": self.commit, "repo": str(self.repo)}
                fh.write(json.dumps({**head, **record}) + "\n")

    def prepare(self, cache: Path, folder: Path) -> None:
        """An unmeasured run that fills the cache warm and sweep read (no cold case asked)."""
        log(f"filling {cache} for warm/sweep (unmeasured pull of {self.a.rows:,} rows)")
        cmd = self.single(self.a.rows, cache, folder / "outputs" / "prepare")
        m = measure(cmd, folder, folder / "prepare.out", self.env, self.a.interval, self.a.timeout)
        if m.exit_code != 0:
            raise SystemExit(f"memory: the run filling the cache failed ({m.exit_code}): see {folder / 'prepare.out'}")

    def seed(self) -> Path:
        """The seeded cache (<workdir>/seeded-cache), written once per workdir: see the docstring."""
        a = self.a
        cache = self.work / "seeded-cache"
        probe = self.work / "probe"
        shutil.rmtree(probe, ignore_errors=True)
        log(f"probe: a {a.probe_rows:,}-row run with the same data settings (learns and checks the key)")
        m = measure(
            self.single(a.probe_rows, probe / "cache", probe / "outputs"), probe, probe, self.env, a.interval, a.timeout
        )
        if m.exit_code != 0:
            raise SystemExit(f"memory: the probe run failed ({m.exit_code}): see {probe}/stderr.txt")
        log(f"seeding {a.rows:,} x {a.features} into {cache}")
        cmd = [sys.executable, str(SCRIPT.parent / "_seeded_cache.py"), "--repo", str(self.repo), "--rows", str(a.rows)]
        cmd += ["--features", str(a.features), "--probe-rows", str(a.probe_rows), "--seed-batch-rows"]
        cmd += [str(a.seed_batch_rows), "--workdir", str(self.work), "--extra", shlex.join(a.extra)]
        m = measure(cmd, self.work, self.work / "seed.out", self.env, a.interval, a.timeout, echo_stderr=True)
        if m.exit_code != 0:
            raise SystemExit(f"memory: seeding failed ({m.exit_code})")
        self.seed_record = json.loads(m.stdout.strip().splitlines()[-1])
        self.seed_record.update(
            mode="seed", wall_seconds=round(m.wall, 1), generator_peak_mb=round(m.runner_peak / MB, 1)
        )
        self.write_json(self.seed_record)
        s = self.seed_record
        how = "reused" if s["reused"] else f"written in {s['write_seconds']:.0f} s"
        log(
            f"  seeded: key {s['key'][:16]}, {s['file_bytes'] / 1e9:.2f} GB, {how}, "
            f"generator peak {s['generator_peak_mb']:.0f} MB"
        )
        return cache

    def run(self) -> None:
        a = self.a
        seeded = self.seed() if "seeded-cache" in a.modes else None
        for rep in range(1, a.reps + 1):
            folder = self.work / f"rep-{rep}"
            if folder.exists():
                shutil.rmtree(folder)  # every repetition starts from an empty working folder
            cache = folder / "cache"
            warm_ok = True  # warm (and a sweep without a seeded cache) read what cold pulled
            if "cold" in a.modes:
                cold = self.run_case("cold", rep, self.single(a.rows, cache, folder / "outputs" / "cold"), folder)
                warm_ok = cold.exit_code == 0
            elif "warm" in a.modes or ("sweep" in a.modes and seeded is None):
                self.prepare(cache, folder)
            if "warm" in a.modes and warm_ok:
                self.run_case("warm", rep, self.single(a.rows, cache, folder / "outputs" / "warm"), folder)
            if seeded is not None:
                cmd = self.single(a.rows, seeded, folder / "outputs" / "seeded-cache")
                self.run_case("seeded-cache", rep, cmd, folder, forbid_warehouse=True)
            if "sweep" in a.modes and (seeded is not None or warm_ok):
                on = seeded if seeded is not None else cache
                self.run_case("sweep", rep, self.sweep(on, folder / "multirun"), folder, seeded is not None)
            if not warm_ok:
                log(f"rep {rep}: cold failed: warm/sweep on its cache skipped")

    def table(self, load: Dict[str, str]) -> str:
        lines = [
            f"runner {self.commit} ({self.repo}); load average {load['start']} at the start, {load['end']} "
            f"at the end; work dir {self.work}",
            "",
            "| mode | rep | rows | features | runner peak MB | warehouse peak MB | wall s | phases s | cache | exit |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
        ]
        names = {"run_seconds": "run", "features_seconds": "features", "trial_loop_seconds": "loop"}
        for c in self.cases:
            ph = ", ".join(f"{names[k]} {c.phases[k]:.1f}" for k in names if k in c.phases) or "-"
            wh = "-" if c.warehouse_peak_mb is None else f"{c.warehouse_peak_mb:,.0f}"
            mode = c.mode + (f" ({c.trials} trials)" if c.trials else "")
            exit_code = f"{c.exit_code}" + (f" ({c.killed})" if c.killed else "")
            lines.append(
                f"| {mode} | {c.rep} | {c.rows:,} | {c.features} | {c.runner_peak_mb:,.0f} | {wh} | "
                f"{c.wall_seconds:.1f} | {ph} | {c.cache} | {exit_code} |"
            )
        if self.seed_record:
            s = self.seed_record
            lines += [
                "",
                f"seeded cache: key {s['key'][:16]}, {s['rows']:,} rows, {s['file_bytes'] / 1e9:.2f} GB on disk, "
                + ("reused" if s["reused"] else f"written in {s['write_seconds']:.0f} s")
                + f", generator peak {s['generator_peak_mb']:.0f} MB (probe: {s['probe_rows']:,} rows, key checked)",
            ]
        lines += ["", "runner peak: wait4's ru_maxrss when above every descendant's peak, else polled VmHWM"]
        return "\n".join(lines)


# ---------------------------------------------------------------- the seeding child


# ---------------------------------------------------------------- main


def parse(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python benchmarks/memory_large.py",
        description=__doc__.split("\n\n")[0],
        epilog="Cases, measurement and the seeded cache: the module docstring and benchmarks/README.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--features", type=int, default=20)
    p.add_argument(
        "--mode",
        default="cold",
        help="comma-separated of "
        + ", ".join(MODES)
        + "; each repetition runs them in the order cold, warm, seeded-cache, sweep",
    )
    p.add_argument("--trials", type=int, default=20, help="sweep: hydra.sweeper.n_trials (default 20)")
    p.add_argument("--sweep-rounds", type=int, default=50, help="sweep: model.num_boost_round (default 50)")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--repo", default=str(REPO), help="the runner checkout to run (PYTHONPATH=it; default this one)")
    p.add_argument("--extra", action="append", default=[], help="overrides added to every run ('a=1 b=2')")
    p.add_argument("--sweep-extra", action="append", default=[], help="overrides added to the sweep only")
    p.add_argument("--out", help="append every case as a JSON line to this file")
    p.add_argument("--workdir", help="keep everything here (default: a temp folder, removed unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the temp folder")
    p.add_argument("--interval", type=float, default=0.1, help="VmHWM polling interval, seconds")
    p.add_argument("--timeout", type=float, default=6 * 3600, help="per process, seconds")
    p.add_argument("--probe-rows", type=int, default=1000, help="seeded-cache: rows of the probe run")
    p.add_argument("--seed-batch-rows", type=int, default=50_000, help="seeded-cache: rows generated at a time")
    a = p.parse_args(argv)
    a.modes = [m.strip() for m in a.mode.split(",") if m.strip()]
    a.extra = [x for chunk in a.extra for x in shlex.split(chunk)]
    a.sweep_extra = [x for chunk in a.sweep_extra for x in shlex.split(chunk)]
    bad = [m for m in a.modes if m not in MODES]
    if bad or not a.modes:
        p.error(f"--mode: choose from {', '.join(MODES)} (got {a.mode!r})")
    if a.rows < 10 or a.features < 2 or a.reps < 1 or a.trials < 1:
        p.error("--rows >= 10, --features >= 2, --reps >= 1, --trials >= 1")
    return a


def main(argv: Optional[List[str]] = None) -> int:
    a = parse(argv)
    load = {"start": load_average()}
    bench = Bench(a)
    log(f"runner {bench.commit} from {bench.repo}; work dir {bench.work}; load {load['start']}")
    try:
        bench.run()
    finally:
        load["end"] = load_average()
        if bench.cases or bench.seed_record:
            print(bench.table(load), flush=True)
        if not a.workdir and not a.keep:
            shutil.rmtree(bench.work, ignore_errors=True)
    return 0 if all(c.exit_code == 0 for c in bench.cases) else 1


if __name__ == "__main__":
    sys.exit(main())
