"""data.sample end to end: `python -m runner` on the embedded warehouse (fakesnow over the
wire, the real connector and Snowpark) trains on a sample drawn in the feature query, the
same rows for the same seed, other rows (and another cache key) for another seed; the
sample is in the dataset's source in MLflow; the best params rerun on all rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from tests.conftest import run_rerun, run_runner, store

pytestmark = pytest.mark.integration

ROWS = 20_000
BASE = ["data=synthetic", f"data.demo.rows={ROWS}", "data.demo.n_features=5", "model.num_boost_round=30"]
SEED_1 = ["data.sample.fraction=0.2", "data.sample.seed=1"]
SEED_2 = ["data.sample.fraction=0.2", "data.sample.seed=2"]


def _run(cwd: Path, *overrides: str):
    """(run id, the run) of `python -m runner BASE OVERRIDES` in cwd."""
    done = run_runner([*BASE, *overrides], cwd)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return _finished(cwd, done.stdout)


def _finished(cwd: Path, stdout: str):
    run_id = re.search(r"runner: run ([0-9a-f]{32}) FINISHED", stdout).group(1)
    return run_id, MlflowClient(tracking_uri=store(cwd)).get_run(run_id)


def _rows(run) -> int:
    m = run.data.metrics
    return int(m["rows_train"] + m["rows_valid"] + m["rows_test"])


def _scores(run) -> dict:
    """The run's metrics but timings (the model's: the same rows and params give the same)."""
    return {k: v for k, v in run.data.metrics.items() if not k.endswith("_seconds")}


def _source(run) -> dict:
    [dataset_input] = run.inputs.dataset_inputs
    return json.loads(dataset_input.dataset.source)


def _ids(cwd: Path, key: str) -> list:
    """The entity keys of cache entry `key` (data.cache_dir's default)."""
    return pq.read_table(cwd / ".runner" / "cache" / key[:2] / f"{key}.parquet", columns=["ID"]).column(0).to_pylist()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Seed 1 (a miss, then a hit, then pulled again), seed 2, and 5,000 rows, in one folder."""
    cwd = tmp_path_factory.mktemp("sample")
    out = {"cwd": cwd}
    out["seed1"] = _run(cwd, *SEED_1)
    out["seed1_ids"] = _ids(cwd, out["seed1"][1].data.tags["runner.cache_key"])
    out["seed1_again"] = _run(cwd, *SEED_1)
    out["seed1_pulled_again"] = _run(cwd, *SEED_1, "data.refresh=true")
    out["seed2"] = _run(cwd, *SEED_2)
    out["rows"] = _run(cwd, "data.sample.rows=5000", "data.sample.seed=1")
    return out


def test_a_fraction_trains_on_about_that_share_of_rows(runs):
    _, run = runs["seed1"]
    assert 0.18 * ROWS <= _rows(run) <= 0.22 * ROWS
    assert run.data.params["data.sample.fraction"] == "0.2" and run.data.params["data.sample.seed"] == "1"
    assert run.data.tags["runner.cache"] == "miss"


def test_a_number_of_rows_is_exact(runs):
    _, run = runs["rows"]
    assert _rows(run) == 5000
    assert _source(run)["sample"] == {"rows": 5000, "seed": 1}


def test_same_seed_same_key_and_rows_another_seed_another_key(runs):
    cwd = runs["cwd"]
    _, first = runs["seed1"]
    _, again = runs["seed1_again"]
    _, pulled = runs["seed1_pulled_again"]
    _, other = runs["seed2"]
    key = first.data.tags["runner.cache_key"]
    assert again.data.tags["runner.cache"] == "hit" and again.data.tags["runner.cache_key"] == key
    assert _scores(again) == _scores(first)
    # Drawn again by the warehouse (data.refresh: a new embedded warehouse, the query run again).
    assert pulled.data.tags["runner.cache"] == "miss" and pulled.data.tags["runner.cache_key"] == key
    assert _ids(cwd, key) == runs["seed1_ids"]
    assert _scores(pulled) == _scores(first)
    other_key = other.data.tags["runner.cache_key"]
    assert other_key != key
    assert set(_ids(cwd, other_key)) != set(runs["seed1_ids"])
    assert 0.18 * ROWS <= _rows(other) <= 0.22 * ROWS


def test_the_dataset_source_records_the_sample_and_its_sql(runs):
    _, run = runs["seed1"]
    source = _source(run)
    assert source["sample"] == {"fraction": 0.2, "seed": 1}
    query = source["query"]
    assert "where abs(hash(ID, 1)) % 1000000000 < 200000000" in query
    assert query.index("hash(ID, 1)") < query.rindex("order by ID")  # sampled, then ordered
    _, hit = runs["seed1_again"]
    assert _source(hit)["sample"] == {"fraction": 0.2, "seed": 1}  # a cache hit keeps the lineage


def test_rerun_with_data_sample_null_runs_the_same_params_on_all_rows(runs):
    cwd = runs["cwd"]
    run_id, sampled = runs["seed1"]
    done = run_rerun(run_id, store(cwd), cwd, "data.sample=null")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    _, full = _finished(cwd, done.stdout)
    assert full.data.tags["user.rerun_of"] == run_id
    assert _rows(full) == ROWS
    assert "sample" not in _source(full) and "hash(" not in _source(full)["query"]
    assert full.data.tags["runner.cache_key"] not in {
        runs[name][1].data.tags["runner.cache_key"] for name in ("seed1", "seed2", "rows")
    }
    params = {k: v for k, v in sampled.data.params.items() if k.startswith("model.")}
    assert {k: full.data.params[k] for k in params} == params


def test_the_snowpark_path_draws_the_same_rows_as_the_sql_text(tmp_path, monkeypatch):
    """A frame whose temporary objects come first is sampled through Snowpark's DataFrame
    API: the same rows as the SQL text a one-statement frame gets."""
    monkeypatch.chdir(tmp_path)  # the embedded warehouse's files (.runner/) go there
    from hydra import compose, initialize_config_dir

    import runner.config  # noqa: F401  (registers the schema)
    from runner.data import build_frame, open_warehouse
    from runner.data.sample import sampled
    from tests.conftest import REPO

    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose(
            config_name="config", overrides=["data=synthetic", "data.demo.rows=3000", "data.demo.n_features=2"]
        )

    class TwoStatements:
        """The frame, as if a temporary object were created first."""

        def __init__(self, frame):
            self._frame = frame

        @property
        def queries(self):
            return {"queries": ["select 1", *self._frame.queries["queries"]], "post_actions": []}

        def __getattr__(self, name):
            return getattr(self._frame, name)

    def ids(frame):
        return sorted(row[0] for row in frame.select("ID").collect())

    with open_warehouse(cfg.data) as wh:
        frame, _ = build_frame(wh.session, cfg.data)
        for sample in ({"fraction": 0.3, "rows": None, "seed": 4}, {"fraction": None, "rows": 700, "seed": 4}):
            OmegaConf.update(cfg, "data.sample", sample, merge=True)
            as_text, as_api = sampled(frame, cfg.data), sampled(TwoStatements(frame), cfg.data)
            assert "hash(" in as_text.queries["queries"][-1] and "hash(" in as_api.queries["queries"][-1]
            assert ids(as_text) == ids(as_api)
            assert len(ids(as_text)) == 700 if sample["rows"] else 700 < len(ids(as_text)) < 1100


@pytest.mark.parametrize(
    "override, code, message",
    [
        ("data.sample.fraction=1.5", 2, "runner: error: data.sample.fraction must be in (0, 1), got 1.5"),
        ("data.sample.rows=0", 2, "runner: error: data.sample.rows must be a positive whole number of rows, got 0"),
        ("data.sample=0.1", 1, "full_key: data.sample"),
    ],
)
def test_a_bad_value_is_one_error_naming_data_sample(tmp_path, override, code, message):
    done = run_runner([*BASE, override], tmp_path)
    assert done.returncode == code, done.stdout[-2000:] + done.stderr[-3000:]
    assert message in done.stderr
    if (tmp_path / "mlruns").exists():  # refused before any run
        client = MlflowClient(tracking_uri=store(tmp_path))
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])
