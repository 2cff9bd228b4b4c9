"""The report: medians per variant on both bases (loop, process), the table (text and markdown)."""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional


@dataclass
class Result:
    """One measurement of a variant. Every variant is timed on two bases:

    loop: the timed loop (bare: create_study to the last trial's end; runner: its printed
    "trial loop Xs", from the first trial asked to the last told); process: spawn to exit
    (imports, reading the features, setup, the loop, the summary, interpreter exit).
    """

    variant: str
    rep: int
    loop: float
    process: float
    trials: int
    best_auc: Optional[float]
    peak_tree: int
    peak_main: int
    feature_queries: Optional[int] = None
    requests_total: Optional[int] = None
    requests_trials: Optional[int] = None
    requests_by_endpoint: Dict[str, int] = field(default_factory=dict)
    trial_seconds: List[float] = field(default_factory=list)
    # spawn -> the first trial's start, the last trial's end -> exit (Optuna's timestamps)
    startup: Optional[float] = None
    teardown: Optional[float] = None


def _median(values):
    return statistics.median(values) if values else float("nan")


def _spread(rs: List[Result], attr: str, prefix: str) -> Dict[str, float]:
    vals = [getattr(r, attr) for r in rs]
    return {f"{prefix}_median": _median(vals), f"{prefix}_min": min(vals), f"{prefix}_max": max(vals)}


def _paired(rs: List[Result], reuse: Dict[int, Result]) -> Dict[str, Any]:
    """Ratios to bare-reuse of the same repetition (the two run back to back), so a drift of
    the machine's speed between repetitions cancels: per basis the median over repetitions
    (min, max); and per trial, trials 2..n matched by number (the same TPE draws, so the same
    hyperparameters), pooled over repetitions."""
    out: Dict[str, Any] = {}
    pairs = [(r, reuse[r.rep]) for r in rs if r.rep in reuse]
    for basis in ("loop", "process"):
        x = [getattr(r, basis) / getattr(b, basis) for r, b in pairs]
        out[f"paired_{basis}_x_reuse"] = (_median(x), min(x), max(x)) if x else None
    per_trial = [
        a / b for r, base in pairs for a, b in zip(r.trial_seconds[1:], base.trial_seconds[1:], strict=False) if b > 0
    ]
    out["trial_x_reuse"] = (_median(per_trial), len(per_trial)) if per_trial else None
    return out


def summarize(results: List[Result], variants, trials: int) -> List[Dict[str, Any]]:
    rows = []
    by = {v: [r for r in results if r.variant == v] for v in variants}
    refs = {
        ref: {basis: _median([getattr(r, basis) for r in by[ref]]) for basis in ("loop", "process")}
        for ref in ("bare", "bare-reuse")
        if by.get(ref)
    }
    reuse = {r.rep: r for r in by.get("bare-reuse", [])}
    for v in variants:
        rs = by[v]
        if not rs:
            continue
        row: Dict[str, Any] = {
            "variant": v,
            "reps": len(rs),
            **_spread(rs, "loop", "loop"),
            **_spread(rs, "process", "process"),
            **_paired(rs, reuse),
        }
        for basis in ("loop", "process"):
            for ref, key in (("bare", "bare"), ("bare-reuse", "reuse")):
                row[f"{basis}_x_{key}"] = row[f"{basis}_median"] / refs[ref][basis] if ref in refs else None
        row.update(
            ms_per_trial=row["loop_median"] / trials * 1000,
            outside_loop_median=_median([r.process - r.loop for r in rs]),
            startup_median=_median([r.startup for r in rs if r.startup is not None]),
            teardown_median=_median([r.teardown for r in rs if r.teardown is not None]),
            requests_per_trial=None,
            requests_total=None,
            peak_rss_mb=_median([r.peak_tree for r in rs]) / 2**20,
            main_rss_mb=_median([r.peak_main for r in rs]) / 2**20,
            best_auc=rs[0].best_auc,
            best_auc_all=sorted({round(r.best_auc, 10) for r in rs if r.best_auc is not None}),
            trials=[r.trials for r in rs],
        )
        per_trial = [t for r in rs for t in r.trial_seconds[1:]]  # the first trial builds the Datasets
        row["trial_median_s"] = _median(per_trial) if per_trial else None
        row["first_trial_median_s"] = (
            _median([r.trial_seconds[0] for r in rs if r.trial_seconds]) if per_trial else None
        )
        row["later_trials_sum_s"] = (
            _median([sum(r.trial_seconds[1:]) for r in rs if r.trial_seconds]) if per_trial else None
        )
        if rs[0].requests_total is not None:
            row["requests_per_trial"] = _median([r.requests_trials / max(1, r.trials) for r in rs])
            row["requests_total"] = _median([r.requests_total for r in rs])
            row["requests_by_endpoint"] = rs[-1].requests_by_endpoint
        row["feature_queries"] = sorted({r.feature_queries for r in rs if r.feature_queries is not None})
        rows.append(row)
    return rows


def machine() -> Dict[str, Any]:
    from importlib import metadata

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
        mem = f"{kb / 2**20:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    versions = {}
    for pkg in (
        "lightgbm",
        "optuna",
        "mlflow",
        "hydra-core",
        "fakesnow",
        "duckdb",
        "snowflake-snowpark-python",
        "snowflake-connector-python",
        "pyarrow",
        "pandas",
        "numpy",
        "scikit-learn",
    ):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "-"
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "versions": versions,
    }


def _fmt_q(v):
    if v is None:
        return "-"
    if isinstance(v, list):
        return "/".join(str(x) for x in v) or "-"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _pair(v) -> str:
    return f"{v[0]:.3f} x ({v[1]:.3f}-{v[2]:.3f})"


def _x(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _table(rows) -> List[List[str]]:
    body = []
    for row in rows:
        req = (
            "-"
            if row["requests_per_trial"] is None
            else f"{row['requests_per_trial']:.2f} ({row['requests_total']:.0f})"
        )
        body.append(
            [
                row["variant"],
                f"{row['loop_median']:.1f} ({row['loop_min']:.1f}-{row['loop_max']:.1f})",
                _x(row["loop_x_bare"]),
                _x(row["loop_x_reuse"]),
                f"{row['process_median']:.1f} ({row['process_min']:.1f}-{row['process_max']:.1f})",
                _x(row["process_x_bare"]),
                _x(row["process_x_reuse"]),
                f"{row['startup_median']:.1f}",
                req,
                _fmt_q(row["feature_queries"]),
                f"{row['peak_rss_mb']:.0f} ({row['main_rss_mb']:.0f})",
                "-" if row["best_auc"] is None else f"{row['best_auc']:.6f}",
            ]
        )
    return body


HEAD = [
    "variant",
    "loop s median (min-max)",
    "loop x bare",
    "loop x reuse",
    "process s median (min-max)",
    "process x bare",
    "process x reuse",
    "startup s",
    "HTTP req/trial (total)",
    "feature queries",
    "peak RSS MB (main)",
    "best AUC",
]


def render(rows, checks, cold, info, args, load: Dict[str, Any], markdown: bool, notes=()) -> str:
    body = _table(rows)
    work = (
        f"{args.rows:,} rows x {args.features} features, {args.trials} {getattr(args, 'sampler', 'tpe')} trials "
        f"(seed 0) x {args.rounds} rounds, "
        f"num_threads={args.threads}, {args.reps} reps alternating"
    )
    bases = (
        "loop: bare = create_study to the last trial's end (features in memory); runner = its "
        "'trial loop' (first trial asked to last told). process: spawn to exit, imports included. "
        "startup: spawn to the first trial's start."
    )
    cold_line = (
        (
            f"cold start: `python -m runner --help` {_median(cold['runner --help']):.2f} s, "
            f'`python -c "import mlflow, optuna, lightgbm"` '
            f"{_median(cold['import mlflow, optuna, lightgbm']):.2f} s "
            f"(median of {len(cold['runner --help'])})"
        )
        if cold["runner --help"]
        else ""
    )
    breakdown = "where the time goes (medians): " + "; ".join(
        f"{row['variant']}: startup {row['startup_median']:.1f} s, first trial {row['first_trial_median_s']:.2f} s, "
        f"trials 2-{args.trials} {row['later_trials_sum_s']:.1f} s ({row['trial_median_s']:.2f} s each), "
        f"exit {row['teardown_median']:.1f} s"
        for row in rows
        if row.get("trial_median_s") is not None
    )
    paired = (
        "paired with bare-reuse of the same repetition (median (min-max) over repetitions; "
        "per trial: trials 2..n matched by number): "
        + "; ".join(
            f"{row['variant']}: loop {_pair(row['paired_loop_x_reuse'])}, "
            f"process {_pair(row['paired_process_x_reuse'])}"
            + (
                f", per trial {row['trial_x_reuse'][0]:.3f} x (n={row['trial_x_reuse'][1]})"
                if row["trial_x_reuse"]
                else ""
            )
            for row in rows
            if row["variant"] != "bare-reuse" and row["paired_loop_x_reuse"]
        )
    )
    lines: List[str] = []
    if markdown:
        lines += [f"Workload: {work}.", "", bases, ""]
        lines += ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        lines += ["", cold_line, "", breakdown, "", paired, ""]
        lines += [f"- {n}" for n in notes] + ([""] if notes else [])
        lines += ["Targets (issues 5, 15):", ""]
        lines += [f"- [{'x' if c['met'] else ' '}] {c['target']}: {c['detail']}" for c in checks]
        lines += [
            "",
            f"Machine: {info['cores']} cores, {info['cpu']}, {info['memory']} RAM, Python {info['python']}, "
            f"{info['os']}; load average {load['start']} at start, {load['end']} at end.",
            "Packages: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + ".",
            "",
        ]
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(HEAD, *body, strict=True)]
        lines.append(f"benchmarks/bench.py: {work}")
        lines.append(bases)
        lines.append("  ".join(h.ljust(w) for h, w in zip(HEAD, widths, strict=True)))
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
        lines += [cold_line, breakdown, paired, *notes, "targets:"]
        lines += [f"  {'MET ' if c['met'] else 'MISS'} {c['target']}: {c['detail']}" for c in checks]
        lines.append(
            f"machine: {info['cores']} cores, {info['cpu']}, {info['memory']}; load average "
            f"{load['start']} -> {load['end']}"
        )
    return "\n".join(lines)
