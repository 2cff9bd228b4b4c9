"""Sweep configs written for hydra-optuna-sweeper, and the edge cases that broke them
(exact float ranges, edited choices on resume, added keys, custom search-space hooks), end to end:
real `python -m runner --multirun` processes, the local tracker (SQLite store in the working
folder) and the default SQLite study storage."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import optuna
import pytest
import yaml

from tests.conftest import run_runner

pytestmark = pytest.mark.integration

SMALL = [
    "data=synthetic",
    "data.demo.rows=2000",
    "data.demo.n_features=5",
    "model.num_boost_round=10",
    "hydra.sweep.dir=sweepdir",
    "hydra.sweeper.params=null",
    "hydra/sweeper/pruner=nop",
]


def _sweep(cwd: Path, *args: str):
    return run_runner(["hydra/sweeper=runner_optuna", *SMALL, *args], cwd, multirun=True)


def _runs(cwd: Path):
    """(run id, status, is parent, {param: value}, {tag: value}) of every run in the store."""
    con = sqlite3.connect(cwd / "mlruns" / "mlflow.db")
    try:
        out = []
        for run_id, status in con.execute("select run_uuid, status from runs order by start_time"):
            params = dict(con.execute("select key, value from params where run_uuid = ?", (run_id,)).fetchall())
            tags = dict(con.execute("select key, value from tags where run_uuid = ?", (run_id,)).fetchall())
            out.append((run_id, status, "mlflow.parentRunId" not in tags, params, tags))
        return out
    finally:
        con.close()


def _study(cwd: Path, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd / '.runner' / 'optuna' / f'{name}.db'}")


def _errors(stderr: str):
    return [ln for ln in stderr.splitlines() if ln.startswith("runner: error:")]


def test_grid_runs_to_exhaustion_cleanly_with_exact_float_ranges(tmp_path):
    proc = _sweep(
        tmp_path,
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.n_trials=10",
        "hydra.sweeper.study_name=grid",
        "model.params.feature_fraction=range(0.3,1.0,0.3)",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Study.stop" not in proc.stderr
    assert "3/3 trials finished (3 complete" in proc.stdout
    children = [r for r in _runs(tmp_path) if not r[2]]
    assert sorted(float(r[3]["model.params.feature_fraction"]) for r in children) == [0.3, 0.6, 0.9]
    assert all(r[1] == "FINISHED" for r in _runs(tmp_path))
    assert [t.state.name for t in _study(tmp_path, "grid").trials] == ["COMPLETE"] * 3


def test_an_edited_choice_on_resume_stops_before_any_trial(tmp_path):
    first = _sweep(
        tmp_path, "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=edit", "model.params.num_leaves=choice(7,15)"
    )
    assert first.returncode == 0, first.stderr[-3000:]
    before = _runs(tmp_path)
    second = _sweep(
        tmp_path, "hydra.sweeper.n_trials=4", "hydra.sweeper.study_name=edit", "model.params.num_leaves=choice(7,31)"
    )
    assert second.returncode == 2, second.stderr[-3000:]
    (line,) = _errors(second.stderr)
    assert "model.params.num_leaves" in line and "hydra.sweeper.study_name" in line and "choice(7, 15)" in line
    assert "Traceback" not in second.stderr
    assert _runs(tmp_path) == before  # nothing created, the parent not reopened, nothing RUNNING
    assert [t.state.name for t in _study(tmp_path, "edit").trials] == ["COMPLETE"] * 2


def test_a_shuffled_choice_resumes_and_new_bounds_are_used(tmp_path):
    first = _sweep(
        tmp_path,
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.study_name=shuf",
        "model.params.num_leaves=shuffle(range(7,10))",
        "model.params.lambda_l2=interval(0.0,1.0)",
    )
    assert first.returncode == 0, first.stderr[-3000:]
    second = _sweep(
        tmp_path,
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.study_name=shuf",
        "model.params.num_leaves=shuffle(range(7,10))",
        "model.params.lambda_l2=interval(2.0,3.0)",
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "model.params.lambda_l2 was float[0.0, 1.0]" in second.stderr
    trials = _study(tmp_path, "shuf").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert all(2.0 <= t.params["model.params.lambda_l2"] <= 3.0 for t in trials[2:])
    assert all(r[1] == "FINISHED" for r in _runs(tmp_path))


def test_added_keys_are_searched_and_named_validly_in_mlflow(tmp_path):
    proc = _sweep(
        tmp_path,
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.study_name=plus",
        "+model.params.extra.max_cat_to_onehot=choice(4,8)",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _runs(tmp_path)
    (parent,) = [r for r in runs if r[2]]
    assert parent[1] == "FINISHED" and parent[3]["space.model.params.extra.max_cat_to_onehot"] == "choice(4,8)"
    children = [r for r in runs if not r[2]]
    assert len(children) == 2 and all(r[1] == "FINISHED" for r in children)
    for child in children:
        value = child[4]["optuna.param.model.params.extra.max_cat_to_onehot"]
        assert value in ("4", "8") and child[3]["model.params.extra.max_cat_to_onehot"] == value


def test_custom_search_space_hook_resume_and_optimization_results(tmp_path):
    (tmp_path / "my_space.py").write_text(
        textwrap.dedent("""\
        def configure(cfg, trial):
            leaves = trial.params["model.params.num_leaves"]
            trial.suggest_float("model.params.lambda_l1", 0.0, 1.0 if leaves < 12 else 5.0)
            trial.suggest_int("+model.params.extra.min_data_per_group", 10, 50)
        """)
    )
    args = [
        "hydra.sweeper.study_name=custom",
        "hydra.sweeper.custom_search_space=my_space.configure",
        "model.params.num_leaves=int(interval(7,15))",
    ]
    first = _sweep(tmp_path, "hydra.sweeper.n_trials=2", *args)
    assert first.returncode == 0, first.stderr[-3000:]
    second = _sweep(tmp_path, "hydra.sweeper.n_trials=3", *args)
    assert second.returncode == 0, second.stderr[-3000:]
    trials = _study(tmp_path, "custom").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    children = {int(r[4]["optuna.trial_number"]): r for r in _runs(tmp_path) if not r[2]}
    for t in trials:
        params = children[t.number][3]
        assert float(params["model.params.lambda_l1"]) == t.params["model.params.lambda_l1"]
        assert (
            int(params["model.params.extra.min_data_per_group"]) == t.params["+model.params.extra.min_data_per_group"]
        )
        assert children[t.number][4]["optuna.param.model.params.extra.min_data_per_group"]
    results = yaml.safe_load((tmp_path / "sweepdir" / "optimization_results.yaml").read_text())
    best = _study(tmp_path, "custom").best_trial
    assert results == {"name": "optuna", "best_params": best.params, "best_value": best.value}


def test_hook_errors_and_removed_samplers_fail_before_anything_exists(tmp_path):
    (tmp_path / "bad_space.py").write_text(
        "def configure(cfg, trial):\n    trial.suggest_int('model.params.nope', 1, 2)\n"
    )
    bad = _sweep(
        tmp_path, "hydra.sweeper.custom_search_space=bad_space.configure", "model.params.num_leaves=int(interval(7,15))"
    )
    assert bad.returncode == 2
    (line,) = _errors(bad.stderr)
    assert "custom_search_space" in line and "model.params.nope" in line
    motpe = _sweep(tmp_path, "hydra/sweeper/sampler=motpe", "model.params.num_leaves=int(interval(7,15))")
    assert motpe.returncode == 2
    (line,) = _errors(motpe.stderr)
    assert "motpe" in line and "removed in Optuna 4.0" in line and "sampler=tpe" in line
    mixed = _sweep(
        tmp_path, "model.params.learning_rate=tag(log, interval(0.01, 0.3))", "model.params.num_leaves=interval(15, 63)"
    )
    assert mixed.returncode == 2
    (line,) = _errors(mixed.stderr)
    assert "model.params.num_leaves" in line and "learning_rate" not in line
    for proc in (bad, motpe, mixed):
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / ".runner" / "optuna").exists() or not list((tmp_path / ".runner" / "optuna").glob("*.db"))
    assert not (tmp_path / "mlruns" / "mlflow.db").exists() or _runs(tmp_path) == []


def test_a_config_written_for_hydra_optuna_sweeper(tmp_path):
    conf = tmp_path / "conf" / "sweep"
    conf.mkdir(parents=True)
    (conf / "upstream.yaml").write_text(
        textwrap.dedent("""\
        # @package _global_
        defaults:
          - override /hydra/sweeper: optuna
          - override /hydra/sweeper/sampler: tpe
        hydra:
          sweeper:
            sampler:
              seed: 123
              consider_prior: true
            direction: maximize
            study_name: upstream
            storage: null
            n_trials: 3
            n_jobs: 1
            max_failure_rate: 0.0
            params:
              model.params.num_leaves: range(7, 15, step=4)
              model.params.learning_rate: tag(log, interval(0.05, 0.3))
        """)
    )
    proc = run_runner(["--config-dir", "conf", "sweep=upstream", *SMALL[:5]], tmp_path, multirun=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = _study(tmp_path, "upstream").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert all(t.params["model.params.num_leaves"] in (7, 11, 15) for t in trials)
    assert trials[0].distributions["model.params.num_leaves"] == optuna.distributions.IntDistribution(7, 15, step=4)
    assert (tmp_path / "sweepdir" / "optimization_results.yaml").is_file()
