"""Canary secrets planted in the environment never show up in anything runner writes."""
from __future__ import annotations

from pathlib import Path

from tests.conftest import run_runner

CANARIES = {
    "SNOWFLAKE_PASSWORD": "canary-sf-pw-7f3a91",
    "AWS_SECRET_ACCESS_KEY": "canary-aws-secret-c4d2e8",
    "MLFLOW_TRACKING_TOKEN": "canary-mlflow-token-55be01",
    "PGPASSWORD": "canary-pg-pw-9e1d77",
}
SMALL = ["data.demo.events=20000", "data.demo.customers=2000", "model.num_boost_round=10"]


def scan(root: Path, texts) -> list:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            found += [f"{path}: {name}" for name, value in CANARIES.items() if value.encode() in blob]
    for i, text in enumerate(texts):
        found += [f"output {i}: {name}" for name, value in CANARIES.items() if value in text]
    return found


def test_no_canary_in_runs_logs_or_outputs(tmp_path):
    ok = run_runner(SMALL, tmp_path, env=CANARIES)
    assert ok.returncode == 0, ok.stderr[-2000:]
    failed = run_runner(SMALL + ["data.label=NOPE"], tmp_path, env=CANARIES)
    assert failed.returncode == 2
    written = list(tmp_path.rglob("*"))
    assert any(p.name == "mlflow.db" for p in written) and any(p.suffix == ".parquet" for p in written)
    assert any(p.name == "config.yaml" for p in written)  # Hydra's output folder was scanned too
    assert scan(tmp_path, [ok.stdout, ok.stderr, failed.stdout, failed.stderr]) == []


def test_scan_finds_a_planted_canary(tmp_path):
    # The scanner itself must be able to fail.
    (tmp_path / "leak.txt").write_text("token=" + CANARIES["MLFLOW_TRACKING_TOKEN"])
    assert scan(tmp_path, []) == [f"{tmp_path / 'leak.txt'}: MLFLOW_TRACKING_TOKEN"]
