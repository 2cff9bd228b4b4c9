"""`python benchmarks/bench.py` at its smoke size, so the benchmark cannot rot.

Real components (fakesnow, mlflow server behind the counting proxy, LightGBM, Optuna);
no timed assertions: only that every variant ran and its numbers are sane.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration

VARIANTS = ["bare", "bare-reuse", "bare-fluent", "runner-local", "runner-server", "runner-cached"]


def test_bench_smoke(tmp_path):
    out, raw = tmp_path / "bench.md", tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/bench.py",
            "--rows",
            "2000",
            "--features",
            "5",
            "--trials",
            "3",
            "--rounds",
            "10",
            "--reps",
            "1",
            "--cold-reps",
            "1",
            "--out",
            str(out),
            "--json",
            str(raw),
            "--workdir",
            str(tmp_path / "work"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(raw.read_text())
    rows = {r["variant"]: r for r in data["rows"]}
    assert list(rows) == VARIANTS
    for name, row in rows.items():
        assert row["reps"] == 1 and row["trials"] == [3], (name, row)
        # Every variant is timed on both bases: its loop, and its whole process (spawn to exit).
        for basis in ("loop", "process"):
            assert 0 < row[f"{basis}_min"] <= row[f"{basis}_median"] <= row[f"{basis}_max"], (name, row)
            assert row[f"{basis}_x_bare"] > 0 and row[f"{basis}_x_reuse"] > 0, (name, row)
        assert row["loop_median"] < row["process_median"], (name, row)
        assert 0 < row["startup_median"] < row["process_median"], (name, row)
        assert row["teardown_median"] >= 0, (name, row)
        assert row["ms_per_trial"] > 0, (name, row)
        assert 50 < row["peak_rss_mb"] < 8000 and 0 < row["main_rss_mb"] <= row["peak_rss_mb"], (name, row)
        assert 0.6 < row["best_auc"] <= 1.0, (name, row)
    assert rows["bare"]["loop_x_bare"] == 1.0 and rows["bare-reuse"]["process_x_reuse"] == 1.0
    # Same seed, same data, same split: the same trials and the same best AUC everywhere.
    assert len({round(r["best_auc"], 9) for r in rows.values()}) == 1, {v: r["best_auc"] for v, r in rows.items()}
    # One feature pull per cold sweep, none from a warm cache, none inside the bare loops.
    assert rows["runner-local"]["feature_queries"] == [1]
    assert rows["runner-server"]["feature_queries"] == [1]
    assert rows["runner-cached"]["feature_queries"] == [0]
    assert rows["bare"]["feature_queries"] == [0]
    # Requests were counted at the proxy: every trial run was created, logged and ended.
    server = rows["runner-server"]
    assert server["requests_total"] > 3 * 3 and server["requests_per_trial"] >= 3, server
    assert rows["runner-local"]["requests_total"] is None
    # bare-fluent tracked into the same local store as runner-local: a parent and a run per trial.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'work' / 'mlruns' / 'mlflow.db'}")
    fluent = client.search_runs([client.get_experiment_by_name("bench-bare-fluent-0").experiment_id])
    children = [r for r in fluent if r.data.tags.get("mlflow.parentRunId")]
    assert len(fluent) == 4 and len(children) == 3, [r.info.run_name for r in fluent]
    assert all("valid_auc" in r.data.metrics and "model.params.learning_rate" in r.data.params for r in children)
    # The benchmark's speed and request targets, each on its stated basis.
    assert {t["target"] for t in data["targets"]} >= {
        "runner-cached trial loop <= 1.05 x bare-reuse (loop basis, paired)",
        "runner-cached trial loop < bare (loop basis)",
        "runner-cached process (spawn to exit) <= 1.05 x bare-reuse (process basis, paired)",
        "runner-cached process (spawn to exit) < bare (process basis)",
        "runner-server <= 3 HTTP requests per trial",
        "`python -m runner --help` < 2 s",
        "same best AUC in every variant",
    }
    # The judged sweep and bare-reuse ran last and back to back; their ratio is taken within the pair.
    assert [r["variant"] for r in data["results"]][-2:] == ["bare-reuse", "runner-cached"]
    cached, reuse = (next(r for r in data["results"] if r["variant"] == v) for v in ("runner-cached", "bare-reuse"))
    paired = rows["runner-cached"]["paired_process_x_reuse"]
    assert paired[0] == pytest.approx(cached["process"] / reuse["process"]), paired
    assert rows["runner-cached"]["trial_x_reuse"][1] == 2, rows["runner-cached"]["trial_x_reuse"]  # trials 2-3
    assert "paired with bare-reuse" in proc.stdout
    assert all(c["cold_start"] for c in [data]) and len(data["cold_start"]["runner --help"]) == 1
    md = out.read_text()
    for name in VARIANTS:
        assert f"| {name} |" in md
    assert "Targets (issues 5, 15)" in md and "Packages:" in md and "runner-cached vs bare-fluent" in md
    for name in VARIANTS:
        assert name in proc.stdout


def test_pruning_smoke(tmp_path):
    """benchmarks/pruning.py at a tiny size: the default sweep (no pruning: nop's runs stand
    for it), nop and an eager median pruner; curves, rounds, the rule's table and the plot."""
    out = tmp_path / "pruning"
    eager = "hydra/sweeper/pruner=median hydra.sweeper.pruner.n_startup_trials=1 hydra.sweeper.pruner.n_warmup_steps=0"
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/pruning.py",
            "--out",
            str(out),
            "--rows",
            "2000",
            "--features",
            "5",
            "--trials",
            "5",
            "--rounds",
            "20",
            "--seeds",
            "0",
            "--candidates",
            "default,nop",
            "--candidate",
            f"eager={eager}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "nop's runs are the default's" in proc.stderr
    res = json.loads((out / "results.json").read_text())
    rows = {r["candidate"]: r for r in res["rows"]}
    assert set(rows) == {"default", "nop", "eager"}
    nop, eager_row = rows["nop"], rows["eager"]
    assert nop["rounds"] == 5 * 20 and nop["pruned"] == 0 and nop["reach_s"] is not None
    assert rows["default"]["final"] == nop["final"] and rows["default"]["rounds"] == nop["rounds"]
    # Pruned trials count the rounds they reported (every 5): fewer rounds than all trials in full.
    assert eager_row["pruned"] >= 1 and eager_row["rounds"] < nop["rounds"], eager_row
    assert eager_row["rounds"] % 5 == 0 and 0 < eager_row["rounds_x"] < 1
    curve = res["curves"]["eager"]["0"]["points"]
    assert [p["rounds"] for p in curve] == sorted(p["rounds"] for p in curve) and curve[-1]["rounds"] == eager_row[
        "rounds"
    ]
    assert all(b["s"] >= a["s"] for a, b in zip(curve, curve[1:], strict=False))
    assert (out / "best_so_far.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "results.md").read_text()
    assert "| eager | 0 |" in md and "rule: seconds" in md
