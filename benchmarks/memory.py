"""Peak memory of a single run against the feature table's size (issue 15, part 3).

For each row count: a cold run (empty feature cache: the pull streams from the embedded
warehouse into the cache) and a warm run (the same cache), each
`python -m runner data=synthetic data.demo.rows=N tracker.log_model=false` in a fresh
process. Peak RSS (the kernel's high-water mark, VmHWM) is read for runner's own process
and, beside it, for the embedded warehouse's process (its child). The baseline is the same
run at 2,000 rows: imports and fixed costs. Prints a table (rows, table MB, peaks, ratio
of what the data adds to the table's size) and the issue's limit, 2 x table + the imports
(450 MB, --imports-mb).

Batch scoring streams too: for each row count, `python -m runner.score` of one model
(trained once at the baseline size: the feature schema does not depend on the row count)
over the same synthetic data, its own peak RSS beside the run's (--no-score skips it).

  python benchmarks/memory.py                                 # 200k, 800k, 2M rows x 50
  python benchmarks/memory.py --rows 200000 --out memory.md
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._measure import _children, load_average  # noqa: E402

MB = 1 << 20


def _hwm(pid: int) -> Optional[int]:
    """VmHWM of pid in bytes, or None (gone, or a zombie)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _is_warehouse(pid: int) -> bool:
    try:
        return b"runner.embedded.server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def measure(cmd: List[str], env: Dict[str, str], cwd: Path) -> Dict[str, float]:
    """Run cmd; its own peak RSS, the embedded warehouse's, and the wall time."""
    cwd.mkdir(parents=True, exist_ok=True)
    with open(cwd / "stdout.txt", "wb") as out, open(cwd / "stderr.txt", "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True)
        peaks = {"runner": 0, "warehouse": 0}
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peaks["runner"] = max(peaks["runner"], _hwm(proc.pid) or 0)
                for child in _children(proc.pid):
                    if _is_warehouse(child):
                        peaks["warehouse"] = max(peaks["warehouse"], _hwm(child) or 0)
                done.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        done.set()
        sampler.join()
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {code}: see {cwd / 'stderr.txt'}")
    return {
        "runner": peaks["runner"] / MB,
        "warehouse": peaks["warehouse"] / MB,
        "seconds": time.perf_counter() - started,
    }


def table_mb(cache_dir: Path) -> float:
    """In-memory size of the cached feature table (Arrow), the unit of the limit."""
    import pyarrow.parquet as pq

    [entry] = list(cache_dir.glob("*/*.parquet"))
    return pq.read_table(entry).nbytes / MB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default="200000,800000,2000000", help="comma-separated row counts")
    p.add_argument("--features", type=int, default=50)
    p.add_argument("--baseline-rows", type=int, default=2000)
    p.add_argument("--imports-mb", type=float, default=450.0, help="the limit's allowance for imports (issue 15)")
    p.add_argument("--no-score", action="store_true", help="skip the `python -m runner.score` column")
    p.add_argument("--out", help="also write the table as markdown to this file")
    p.add_argument("--workdir", help="keep runs under this folder (default: a temp folder)")
    a = p.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="runner-memory-")).resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO), env.get("PYTHONPATH")) if x)

    def data(rows: int, cache: Path) -> List[str]:
        return [
            "data=synthetic",
            f"data.demo.rows={rows}",
            f"data.demo.n_features={a.features}",
            f"data.cache_dir={cache}",
            f"tracker.dir={work / 'mlruns'}",
        ]

    def measured(cmd: List[str], tag: str) -> Dict[str, float]:
        result = measure(cmd, env, work / tag)
        print(
            f"[memory] {tag}: {cmd[2]} {result['runner']:.0f} MB, warehouse {result['warehouse']:.0f} MB, "
            f"{result['seconds']:.1f} s, load {load_average()}",
            file=sys.stderr,
            flush=True,
        )
        return result

    def run(rows: int, cache: Path, tag: str, extra: Optional[List[str]] = None) -> Dict[str, float]:
        cmd = [sys.executable, "-m", "runner", *data(rows, cache), f"hydra.run.dir={work / 'outputs' / tag}"]
        return measured(cmd + (extra if extra is not None else ["tracker.log_model=false"]), tag)

    def score(rows: int, cache: Path, tag: str) -> Dict[str, float]:
        return measured([sys.executable, "-m", "runner.score", f"runs:/{model_run}/model", *data(rows, cache)], tag)

    base = run(a.baseline_rows, work / "cache-base", "baseline")["runner"]
    model_run = None
    if not a.no_score:
        run(a.baseline_rows, work / "cache-base", "model", ["model.num_boost_round=50"])
        found = re.search(r"runner: run ([0-9a-f]{32}) FINISHED", (work / "model" / "stdout.txt").read_text())
        if found is None:
            raise SystemExit(f"no finished run in {work / 'model' / 'stdout.txt'}")
        model_run = found.group(1)
    lines = [
        f"Peak RSS of a single run, {a.features} float features (baseline: the same run at "
        f"{a.baseline_rows:,} rows, {base:.0f} MB; limit: 2 x table + {a.imports_mb:.0f} MB of imports)",
        "",
        "| rows | table MB | runner cold MB | runner warm MB | (cold - baseline) / table | limit MB "
        "| warehouse MB | cold s | warm s |" + (" runner.score MB | score s |" if model_run else ""),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if model_run else ""),
    ]
    for rows in (int(r) for r in a.rows.split(",")):
        cache = work / f"cache-{rows}"
        cold = run(rows, cache, f"{rows}-cold")
        warm = run(rows, cache, f"{rows}-warm")
        size = table_mb(cache)
        limit = 2 * size + a.imports_mb
        ok = "" if max(cold["runner"], warm["runner"]) <= limit else " (over)"
        line = (
            f"| {rows:,} | {size:.0f} | {cold['runner']:.0f} | {warm['runner']:.0f} | "
            f"{(cold['runner'] - base) / size:.2f} | {limit:.0f}{ok} | {cold['warehouse']:.0f} | "
            f"{cold['seconds']:.1f} | {warm['seconds']:.1f} |"
        )
        if model_run:
            scored = score(rows, cache, f"{rows}-score")
            line += (
                f" {scored['runner']:.0f}{'' if scored['runner'] <= limit else ' (over)'} | {scored['seconds']:.1f} |"
            )
        lines.append(line)
    lines += ["", f"load average at the end: {load_average()}"]
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
