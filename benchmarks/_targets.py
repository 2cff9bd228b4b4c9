"""The benchmark's targets (issue 5, restated by issue 15 part 5), each on a stated basis.

- loop basis: the timed loop of both (bare: create_study to the last trial's end, features
  already in memory; runner: its printed "trial loop Xs", first trial asked to last told).
- process basis: spawn to exit, imports included: what a user waits for.

The ratios to bare-reuse are judged within each repetition: bench.py runs bare-reuse and
the judged sweep back to back (which one first alternates), so the machine's drift between
repetitions (more than 5 % on a shared 2-core VM) cancels; the ratio of medians is reported
beside it.

The sweep they judge is `runner-cached` (warm feature cache) when it ran, else
`runner-local`: like the bare loops, it starts from the features in a local Parquet file, so
both bases compare like with like; `runner-local`'s process also pulls from the warehouse
and its first trial may wait for that pull.
"""

from __future__ import annotations

import statistics
from typing import Any, Container, Dict, List

LIMIT_X_REUSE = 1.05


def sweep_variant(r: Container[str]) -> str:
    """The judged sweep among the variants (names, or rows keyed by name)."""
    return "runner-cached" if "runner-cached" in r else "runner-local"


def targets(rows: List[Dict[str, Any]], cold: Dict[str, List[float]]) -> List[Dict[str, Any]]:
    r = {row["variant"]: row for row in rows}
    out: List[Dict[str, Any]] = []

    def add(name, ok, detail):
        out.append({"target": name, "met": bool(ok), "detail": detail})

    sweep = sweep_variant(r)
    if sweep in r:
        for basis, what in (("loop", "trial loop"), ("process", "process (spawn to exit)")):
            s = r[sweep][f"{basis}_median"]
            paired = r[sweep].get(f"paired_{basis}_x_reuse")
            if "bare-reuse" in r and paired:
                x, lo, hi = paired
                add(
                    f"{sweep} {what} <= {LIMIT_X_REUSE:.2f} x bare-reuse ({basis} basis, paired)",
                    x <= LIMIT_X_REUSE,
                    f"{x:.3f} x, median of {r[sweep]['reps']} back-to-back pairs ({lo:.3f}-{hi:.3f}); "
                    f"ratio of medians {r[sweep][f'{basis}_x_reuse']:.3f} x "
                    f"({s:.1f} s vs {r['bare-reuse'][f'{basis}_median']:.1f} s)",
                )
            if "bare" in r:
                x = r[sweep][f"{basis}_x_bare"]
                add(
                    f"{sweep} {what} < bare ({basis} basis)",
                    x < 1.0,
                    f"{x:.3f} x ({s:.1f} s vs {r['bare'][f'{basis}_median']:.1f} s)",
                )
    if "bare" in r and "runner-local" in r:
        # runner's own process against the bare loop's. The embedded warehouse stands in for
        # Snowflake (a remote service in production); its process is reported, not counted:
        # fakesnow holds ~10x the result while it serves it (Arrow -> IPC -> base64 -> JSON).
        x = r["runner-local"]["main_rss_mb"] / r["bare"]["main_rss_mb"]
        add(
            "runner-local peak RSS <= 1.5 x bare",
            x <= 1.5,
            f"{x:.2f} x bare (runner's process; with the embedded warehouse's process "
            f"{r['runner-local']['peak_rss_mb'] / r['bare']['peak_rss_mb']:.2f} x)",
        )
    if "runner-server" in r:
        q = r["runner-server"]["requests_per_trial"]
        add(
            "runner-server <= 3 HTTP requests per trial",
            q <= 3,
            f"{q:.2f} per trial run ({r['runner-server']['requests_total']:.0f} in all with the sweep's setup and "
            f"summary, {r['runner-server']['requests_total'] / max(1, r['runner-server']['trials'][0]):.2f} per trial "
            "counting those too)",
        )
    for v, want in (("runner-local", [1]), ("runner-server", [1]), ("runner-cached", [0])):
        if v in r:
            got = r[v]["feature_queries"]
            add(f"{v}: {want[0]} feature quer{'y' if want[0] == 1 else 'ies'}", got == want, f"{got}")
    if cold["runner --help"]:
        h = statistics.median(cold["runner --help"])
        add(
            "`python -m runner --help` < 2 s",
            h < 2.0,
            f"{h:.2f} s (import mlflow, optuna, lightgbm: "
            f"{statistics.median(cold['import mlflow, optuna, lightgbm']):.2f} s)",
        )
    aucs = {v: row["best_auc_all"] for v, row in r.items()}
    flat = {a for vals in aucs.values() for a in vals}
    if flat:
        spread = max(flat) - min(flat)
        add(
            "same best AUC in every variant",
            spread < 1e-9,
            "all " + (f"{min(flat):.6f}" if spread < 1e-9 else ", ".join(f"{v} {vals}" for v, vals in aucs.items())),
        )
    return out


def comparisons(rows: List[Dict[str, Any]]) -> List[str]:
    """Ratios that are reported, not targets: every runner variant against the hand loop a
    user writes instead (bare-fluent), on both bases."""
    r = {row["variant"]: row for row in rows}
    if "bare-fluent" not in r:
        return []
    ref = r["bare-fluent"]
    out = []
    for v in ("runner-local", "runner-server", "runner-cached"):
        if v in r:
            out.append(
                f"{v} vs bare-fluent: loop {r[v]['loop_median'] / ref['loop_median']:.3f} x, "
                f"process {r[v]['process_median'] / ref['process_median']:.3f} x"
            )
    return out
