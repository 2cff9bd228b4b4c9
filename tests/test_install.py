"""runner installed like a tool: a wheel built from the repo, in a fresh virtual environment,
used from a folder outside the repo.

The venv installs the wheel with its dependencies from pip's package cache (warm after the
README's install), so it gets the newest releases the ranges in pyproject.toml allow. Every
step runs the installed code: `python -m runner`, the `runner` console script, a user config
folder with its own data config and feature module, `python -m runner.init`, and the Python
API in a process of its own.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration

SMALL = ["data=synthetic", "data.demo.rows=2000", "data.demo.n_features=5", "model.num_boost_round=20"]
SMALL_DEMO = ["data.demo.customers=2000", "data.demo.events=20000", "model.num_boost_round=20"]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("install")
    dist = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (wheel,) = dist.glob("runner-*.whl")
    env_dir = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    pip = subprocess.run(
        [str(env_dir / "bin" / "pip"), "install", "-q", str(wheel)], capture_output=True, text=True, timeout=1500
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    return env_dir


def _run(cmd, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MLFLOW_TRACKING_URI")}
    env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _runs(folder: Path, experiment: str = "runner") -> list:
    con = sqlite3.connect(folder / "mlruns" / "mlflow.db")
    try:
        return con.execute(
            "select r.run_uuid, r.status from runs r join experiments e on e.experiment_id = "
            "r.experiment_id where e.name = ? order by r.start_time",
            (experiment,),
        ).fetchall()
    finally:
        con.close()


def test_the_wheel_carries_conf_and_runs_from_any_folder(venv, tmp_path):
    py = venv / "bin" / "python"
    where = _run(
        [py, "-c", "import runner, runner.commands.app as app; print(runner.__file__); print(app.conf_dir())"], tmp_path
    )
    assert where.returncode == 0, where.stderr
    module, conf = where.stdout.split()
    assert str(venv) in module and str(REPO) not in module  # the installed copy, not the checkout
    assert (Path(conf) / "config.yaml").is_file() and (Path(conf) / "data" / "demo.yaml").is_file()
    assert _run([venv / "bin" / "pip", "check"], tmp_path).returncode == 0

    first = _run([py, "-m", "runner", *SMALL], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "FINISHED" in first.stdout and "1 feature queries" in first.stdout
    second = _run([venv / "bin" / "runner", *SMALL, "model.params.num_leaves=7"], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "cache hit, 0 feature queries" in second.stdout
    assert [status for _, status in _runs(tmp_path)] == ["FINISHED", "FINISHED"]
    helped = _run([venv / "bin" / "runner", "--help"], tmp_path)
    assert helped.returncode == 0 and "data: demo, file, snowflake, synthetic" in helped.stdout


def test_init_writes_a_starter_conf_that_runs_and_refuses_to_overwrite(venv, tmp_path):
    py = venv / "bin" / "python"
    init = _run([py, "-m", "runner.init"], tmp_path)
    assert init.returncode == 0, init.stderr
    written = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "conf").rglob("*") if p.is_file())
    assert written == [
        "conf/README.md",
        "conf/data/my_files.yaml",
        "conf/data/my_query.yaml",
        "conf/data/my_table.yaml",
        "conf/project.yaml",
        "conf/sweep/my_sweep.yaml",
        "conf/tracker/my_sagemaker.yaml",
        "conf/tracker/my_server.yaml",
    ]
    (tmp_path / "conf" / "data" / "my_query.yaml").write_text(
        (tmp_path / "conf" / "data" / "my_query.yaml").read_text() + "# edited by the user\n"
    )
    again = _run([py, "-m", "runner.init"], tmp_path)
    assert again.returncode == 2 and "not overwriting existing files" in again.stderr
    assert (tmp_path / "conf" / "data" / "my_query.yaml").read_text().endswith("# edited by the user\n")

    run = _run([venv / "bin" / "runner", "--config-dir", "conf", "data=my_query", *SMALL_DEMO], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "FINISHED" in run.stdout and "experiment 'runner'" in run.stdout
    # project.yaml: runner's config with the project's defaults (data=my_query, its experiment).
    project = _run([venv / "bin" / "runner", "--config-dir", "conf", "--config-name", "project", *SMALL_DEMO], tmp_path)
    assert project.returncode == 0, project.stderr[-3000:]
    assert "experiment 'my-project'" in project.stdout and "cache hit" in project.stdout  # the same features
    # The files starter: its two tables, once the user has put files where it says.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "orders.csv").write_text(
        "ORDER_ID,CUSTOMER_ID,AMOUNT,RETURNED\n"
        + "".join(f"{i},{i % 7},{(i * 37) % 101}.5,{int((i * 37) % 101 > 60)}\n" for i in range(1, 301))
    )
    (tmp_path / "data" / "customers.csv").write_text(
        "CUSTOMER_ID,SEGMENT\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(7))
    )
    files = _run(
        [venv / "bin" / "runner", "--config-dir", "conf", "data=my_files", "data.files.CUSTOMERS=data/customers.csv"],
        tmp_path,
    )
    assert files.returncode == 0, files.stderr[-3000:]
    assert "FINISHED" in files.stdout and "cache miss" in files.stdout
    # The Snowflake starter composes on runner's schema (it needs an account to run).
    shown = _run([venv / "bin" / "runner", "--config-dir", "conf", "data=my_table", "--cfg", "job"], tmp_path)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "backend: snowflake" in shown.stdout and "table: MY_DB.MY_SCHEMA.CUSTOMER_FEATURES" in shown.stdout


def test_a_user_project_brings_its_own_configs_and_feature_code(venv, tmp_path):
    (tmp_path / "my_pkg").mkdir()
    (tmp_path / "my_pkg" / "__init__.py").write_text("")
    (tmp_path / "my_pkg" / "features.py").write_text(
        textwrap.dedent("""\
        from snowflake.snowpark import functions as F


        def build(session, cfg, min_amount=0):
            events = session.table("EVENTS").filter(F.col("AMOUNT") >= min_amount)
            spend = events.group_by("CUSTOMER_ID").agg(F.sum("AMOUNT").alias("SPEND"),
                                                       F.count("*").alias("N"))
            customers = session.table("CUSTOMERS")
            return customers.join(spend, on="CUSTOMER_ID", how="left").select(
                "CUSTOMER_ID", "PLAN", "SPEND", "N", "CHURNED")
        """)
    )
    conf = tmp_path / "conf"
    (conf / "data").mkdir(parents=True)
    (conf / "tracker").mkdir()
    (conf / "tracker" / "mine.yaml").write_text("defaults:\n  - local\n  - _self_\nexperiment: my-project\n")
    (conf / "data" / "orders.yaml").write_text(
        textwrap.dedent("""\
        defaults:
          - demo
          - _self_
        features:
          _target_: my_pkg.features.build
          min_amount: 5
        """)
    )
    run = _run([venv / "bin" / "runner", "--config-dir", "conf", "data=orders", "tracker=mine", *SMALL_DEMO], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "experiment 'my-project'" in run.stdout
    ((run_id, status),) = _runs(tmp_path, "my-project")
    assert status == "FINISHED"
    con = sqlite3.connect(tmp_path / "mlruns" / "mlflow.db")
    params = dict(con.execute("select key, value from params where run_uuid = ?", (run_id,)).fetchall())
    con.close()
    assert params["data.features._target_"] == "my_pkg.features.build" and params["data.features.min_amount"] == "5"


def test_python_api_in_a_process_of_its_own(venv, tmp_path):
    script = tmp_path / "notebook.py"
    script.write_text(
        textwrap.dedent(f"""\
        import json, runner
        small = {SMALL!r}
        first = runner.run(small)
        second = runner.run(small + ["model.params.num_leaves=7"])
        try:
            runner.run(["data.split.valid=2"])
            error = None
        except runner.RunnerError as exc:
            error = [type(exc).__name__, str(exc)]
        summary = runner.sweep(small + ["sweep=lightgbm", "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=nb"])
        print("RESULT " + json.dumps({{
            "runs": [first.run_id, second.run_id], "auc": first.metrics["valid_auc"],
            "model_uri": first.model_uri, "queries": [first.features.feature_queries, second.features.feature_queries],
            "error": error, "sweep": [summary.parent_run_id, summary.best_run_id, summary.best_value,
                                      sorted(summary.best_params)]}}))
        """)
    )
    proc = _run([venv / "bin" / "python", script], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    got = json.loads(line[len("RESULT ") :])
    assert len(set(got["runs"])) == 2 and 0.5 < got["auc"] <= 1.0
    assert got["model_uri"] == f"runs:/{got['runs'][0]}/model"
    assert got["queries"] == [1, 0]  # the second run reuses the process's pull
    assert got["error"][0] == "ConfigError" and "data.split.valid" in got["error"][1]
    parent, best_run, best_value, params = got["sweep"]
    assert parent and best_run and 0.5 < best_value <= 1.0
    assert params == sorted(
        [
            "model.params.feature_fraction",
            "model.params.lambda_l2",
            "model.params.learning_rate",
            "model.params.min_child_samples",
            "model.params.num_leaves",
        ]
    )
    statuses = [status for _, status in _runs(tmp_path)]
    assert statuses.count("FINISHED") == 2 + 1 + 2 and "RUNNING" not in statuses  # runs, parent, trials
