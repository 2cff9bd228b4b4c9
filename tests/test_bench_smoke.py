"""`python benchmarks/bench.py` at its smoke size, so the benchmark cannot rot.

Real components (fakesnow, mlflow server behind the counting proxy, LightGBM, Optuna);
no timed assertions: only that every variant ran and its numbers are sane.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

VARIANTS = ["bare", "bare-reuse", "runner-local", "runner-server", "runner-cached"]


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
        assert 0 < row["wall_min"] <= row["wall_median"] <= row["wall_max"], (name, row)
        assert row["ms_per_trial"] > 0 and row["ratio_to_bare"] > 0, (name, row)
        assert 50 < row["peak_rss_mb"] < 8000 and 0 < row["main_rss_mb"] <= row["peak_rss_mb"], (name, row)
        assert 0.6 < row["best_auc"] <= 1.0, (name, row)
    assert rows["bare"]["ratio_to_bare"] == 1.0
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
    assert {t["target"] for t in data["targets"]} >= {
        "runner-local wall <= 0.85 x bare",
        "runner-server <= 3 HTTP requests per trial",
        "`python -m runner --help` < 2 s",
        "same best AUC in every variant",
    }
    assert all(c["cold_start"] for c in [data]) and len(data["cold_start"]["runner --help"]) == 1
    md = out.read_text()
    for name in VARIANTS:
        assert f"| {name} |" in md
    assert "Targets (issue 5)" in md and "Packages:" in md
    for name in VARIANTS:
        assert name in proc.stdout
