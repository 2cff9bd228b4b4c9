"""benchmarks/pruning.py's analysis: best-so-far curves from the Optuna storages, the
part-4 rule per candidate and seed, the tables and the plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional

RULE_SHARE = 0.5  # reach nop's final best in at most this share of nop's wall time (and rounds)


def _rounds(trial, a, client) -> int:
    """Boosting rounds a trial trained: a pruned trial up to its last report; a complete one
    all of them, or up to early stopping (best iteration + patience, from its MLflow run)."""
    if trial.state.name == "PRUNED":
        return max(trial.intermediate_values) if trial.intermediate_values else 0
    if not a.early_stopping:
        return a.rounds
    run_id = trial.user_attrs.get("mlflow_run_id")
    best = client.get_run(run_id).data.metrics.get("best_iteration") if run_id else None
    return a.rounds if best is None else int(min(a.rounds, best + a.early_stopping))


def curve(storage: str, study_name: str, a, client) -> Dict[str, Any]:
    """One sweep: per finished trial (in order of its end) seconds since the first trial's
    start, cumulative rounds, best-so-far; and the totals."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage)
    maximize = study.direction.name == "MAXIMIZE"
    trials = [t for t in study.trials if t.datetime_complete is not None]
    t0 = min(t.datetime_start for t in study.trials)
    points, rounds, best = [], 0, None
    for t in sorted(trials, key=lambda t: t.datetime_complete):
        rounds += _rounds(t, a, client)
        if t.state.name == "COMPLETE" and t.value is not None:
            best = t.value if best is None or (t.value > best if maximize else t.value < best) else best
        points.append({"s": (t.datetime_complete - t0).total_seconds(), "rounds": rounds, "best": best})
    states = [t.state.name for t in trials]
    return {
        "maximize": maximize,
        "points": points,
        "final": best,
        "wall": points[-1]["s"] if points else float("nan"),
        "rounds": rounds,
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "failed": states.count("FAIL"),
    }


def _reach(points: List[Dict[str, Any]], target: float, maximize: bool) -> Optional[Dict[str, float]]:
    for p in points:
        if p["best"] is not None and (p["best"] >= target if maximize else p["best"] <= target):
            return p
    return None


def analyse(runs: Dict[str, Dict[int, Dict[str, Any]]], a) -> Dict[str, Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{Path(a.out).resolve() / 'mlruns' / 'mlflow.db'}")
    curves = {
        name: {seed: {**run, **curve(run["storage"], run["study"], a, client)} for seed, run in seeds.items()}
        for name, seeds in runs.items()
    }
    nop = curves["nop"]
    finals = [c["final"] for c in nop.values()]
    noise = statistics.stdev(finals) if len(finals) > 1 else 0.0
    slack = max(a.tolerance, noise)
    rows = []
    for name, seeds in curves.items():
        for seed, c in seeds.items():
            ref = nop[seed]
            sign = 1 if ref["maximize"] else -1
            target = ref["final"] - sign * a.tolerance
            hit = _reach(c["points"], target, ref["maximize"])
            row = {
                "candidate": name,
                "seed": seed,
                "final": c["final"],
                "nop_final": ref["final"],
                "delta": sign * (c["final"] - ref["final"]),  # > 0: better than nop
                "complete": c["complete"],
                "pruned": c["pruned"],
                "failed": c["failed"],
                "rounds": c["rounds"],
                "rounds_x": c["rounds"] / ref["rounds"],
                "wall": c["wall"],
                "wall_x": c["wall"] / ref["wall"],
                "process": c["process"],
                "reach_s": hit["s"] if hit else None,
                "reach_s_x": hit["s"] / ref["wall"] if hit else None,
                "reach_rounds": hit["rounds"] if hit else None,
                "reach_rounds_x": hit["rounds"] / ref["rounds"] if hit else None,
            }
            row["final_ok"] = row["delta"] >= -slack
            row["rule_rounds"] = bool(hit) and row["reach_rounds_x"] <= RULE_SHARE and row["final_ok"]
            row["rule_seconds"] = bool(hit) and row["reach_s_x"] <= RULE_SHARE and row["final_ok"]
            rows.append(row)
    summary = []
    for name in curves:
        rs = [r for r in rows if r["candidate"] == name]
        summary.append(
            {
                "candidate": name,
                "mean_final": statistics.fmean(r["final"] for r in rs),
                "mean_delta": statistics.fmean(r["delta"] for r in rs),
                "mean_rounds_x": statistics.fmean(r["rounds_x"] for r in rs),
                "mean_wall_x": statistics.fmean(r["wall_x"] for r in rs),
                "pruned": sum(r["pruned"] for r in rs),
                "trials": sum(r["complete"] + r["pruned"] + r["failed"] for r in rs),
                "reached": sum(r["reach_s"] is not None for r in rs),
                "rule_rounds": sum(r["rule_rounds"] for r in rs),
                "rule_seconds": sum(r["rule_seconds"] for r in rs),
                "final_ok": statistics.fmean(r["delta"] for r in rs) >= -slack,
                "seeds": len(rs),
            }
        )
    return {
        "workload": {
            k: getattr(a, k) for k in ("rows", "features", "trials", "rounds", "early_stopping", "threads", "seeds")
        },
        "candidates": {name: overrides for name, overrides in a.table.items()},
        "tolerance": a.tolerance,
        "noise": noise,
        "slack": slack,
        "rows": rows,
        "summary": summary,
        "curves": {name: {str(s): c for s, c in seeds.items()} for name, seeds in curves.items()},
    }


def _verdict(ok: bool) -> str:
    return "pass" if ok else "fail"


def _f(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def render(res: Dict[str, Any], a, markdown: bool) -> str:
    w = res["workload"]
    head = [
        "candidate",
        "seed",
        "final best",
        "nop final",
        "delta",
        "pruned",
        "rounds (x nop)",
        "wall s (x nop)",
        "reach nop-tol at s (x nop wall)",
        "reach at rounds (x nop)",
        "rule: rounds",
        "rule: seconds",
    ]
    body = [
        [
            r["candidate"],
            str(r["seed"]),
            f"{r['final']:.5f}",
            f"{r['nop_final']:.5f}",
            f"{r['delta']:+.5f}",
            f"{r['pruned']}/{r['complete'] + r['pruned'] + r['failed']}",
            f"{r['rounds']} ({r['rounds_x']:.2f})",
            f"{r['wall']:.1f} ({r['wall_x']:.2f})",
            f"{_f(r['reach_s'], '.1f')} ({_f(r['reach_s_x'], '.2f')})",
            f"{_f(r['reach_rounds'], 'd')} ({_f(r['reach_rounds_x'], '.2f')})",
            *(
                ("(ref)", "(ref)")
                if r["candidate"] == "nop"
                else (_verdict(r["rule_rounds"]), _verdict(r["rule_seconds"]))
            ),
        ]
        for r in res["rows"]
    ]
    shead = ["candidate", "mean final", "mean delta", "pruned", "rounds x nop", "wall x nop", "rule rounds", "rule s"]
    sbody = [
        [
            s["candidate"],
            f"{s['mean_final']:.5f}",
            f"{s['mean_delta']:+.5f}" + ("" if s["final_ok"] else " (worse)"),
            f"{s['pruned']}/{s['trials']}",
            f"{s['mean_rounds_x']:.2f}",
            f"{s['mean_wall_x']:.2f}",
            *(
                ("(ref)", "(ref)")
                if s["candidate"] == "nop"
                else (f"{s['rule_rounds']}/{s['seeds']}", f"{s['rule_seconds']}/{s['seeds']}")
            ),
        ]
        for s in res["summary"]
    ]
    intro = (
        f"{w['rows']:,} rows x {w['features']} features, {w['trials']} trials x {w['rounds']} rounds "
        f"(early stopping {w['early_stopping'] or 'off'}), num_threads={w['threads']}, seeds {w['seeds']}; "
        f"rule: reach nop's final best - {res['tolerance']} in <= {RULE_SHARE:.0%} of nop's wall time "
        f"(rounds: of nop's rounds) and final best no worse than nop's beyond "
        f"{res['slack']:.5f} (seed-to-seed stdev of nop's finals {res['noise']:.5f}, at least the tolerance)"
    )
    cands = "; ".join(f"{n}: {' '.join(o) or '(the defaults)'}" for n, o in res["candidates"].items())
    if markdown:

        def table(h, b):
            return ["| " + " | ".join(h) + " |", "|" + "---|" * len(h)] + ["| " + " | ".join(r) + " |" for r in b]

        return "\n".join(
            [intro, "", f"Candidates: {cands}", ""] + table(shead, sbody) + [""] + table(head, body) + [""]
        )

    def text(h, b):
        widths = [max(len(x) for x in col) for col in zip(h, *b, strict=True)]
        return ["  ".join(c.ljust(wd) for c, wd in zip(r, widths, strict=True)) for r in [h, *b]]

    return "\n".join(
        ["benchmarks/pruning.py: " + intro, "candidates: " + cands] + text(shead, sbody) + text(head, body)
    )


def plot(res: Dict[str, Any], path: Path) -> Optional[Path]:
    """best_so_far.png: one row per seed, best-so-far against seconds (left) and against
    rounds trained (right), one line per candidate; the dotted line is nop's final best -
    tolerance (what the rule asks a candidate to reach)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    seeds = list(next(iter(res["curves"].values())))
    fig, axes = plt.subplots(len(seeds), 2, figsize=(13, 3.6 * len(seeds)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, seed in zip(axes, seeds, strict=True):
        for i, (name, by_seed) in enumerate(res["curves"].items()):
            pts = [p for p in by_seed[seed]["points"] if p["best"] is not None]
            if not pts:
                continue
            for ax, key in zip(row, ("s", "rounds"), strict=True):
                ax.step(
                    [0.0] + [p[key] for p in pts],
                    [pts[0]["best"]] + [p["best"] for p in pts],
                    where="post",
                    color=colors[i % len(colors)],
                    linewidth=2.2 if name in ("nop", "default") else 1.2,
                    linestyle="--" if name == "default" else "-",  # nop shows under it when they are one
                    label=name,
                )
        nop = res["curves"]["nop"][seed]
        sign = 1 if nop["maximize"] else -1
        for ax in row:
            ax.axhline(nop["final"] - sign * res["tolerance"], color="grey", linestyle=":", linewidth=1)
            ax.grid(alpha=0.3)
        row[0].set_ylabel(f"seed {seed}: best valid so far")
    axes[-1][0].set_xlabel("seconds since the first trial started")
    axes[-1][1].set_xlabel("boosting rounds trained (cumulative)")
    axes[0][1].legend(fontsize=8, loc="lower right", ncol=2)
    w = res["workload"]
    fig.suptitle(
        f"best-so-far, {w['rows']:,} x {w['features']}, {w['trials']} trials x {w['rounds']} rounds "
        f"(early stopping {w['early_stopping'] or 'off'}); dotted: nop's final - {res['tolerance']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
