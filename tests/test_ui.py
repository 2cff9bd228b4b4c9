"""The MLflow UI as a user meets it, in a real headless Chromium (Debian's `chromium`) against
`mlflow ui` on the local store of a real sweep: the experiment opens on the runs table, the
parent run expands to its trials, and the parent's best_valid_auc chart is the optimization
curve. Skips only where Chromium is not installed (apt-get install -y chromium)."""

from __future__ import annotations

import shutil

import pytest
from mlflow import MlflowClient

from tests.conftest import run_runner
from tests.support.browser import INSTALL_HINT, Chromium, MlflowUi

pytestmark = [pytest.mark.integration, pytest.mark.skipif(shutil.which("chromium") is None, reason=INSTALL_HINT)]

SMALL = ["data.demo.events=100000", "data.demo.customers=5000", "model.num_boost_round=30"]
PARENT = "runner-lightgbm"  # the parent run's name: the study's
# MLflow 3.17's UI takes the experiment's kind from its GenAI / Model training switch (the
# URL's workflowType, else the browser's last choice, GenAI at first), not from the
# experiment's mlflow.experimentKind tag: a link opens the runs table by saying so.
MODEL_TRAINING = "workflowType=machine_learning"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """4 trials into runner's default local store (SQLite + artifact folder under ./mlruns)."""
    cwd = tmp_path_factory.mktemp("ui_sweep")
    proc = run_runner(
        ["sweep=lightgbm", *SMALL, "hydra.sweeper.n_trials=4", "tracker.log_model=false"], cwd, multirun=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = cwd / "mlruns"
    backend = f"sqlite:///{store / 'mlflow.db'}"
    client = MlflowClient(backend)
    experiment = client.get_experiment_by_name("runner")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r.info.run_id for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert parent.info.run_name == PARENT and len(children) == 4
    with MlflowUi(backend, (store / "artifacts").as_uri(), cwd) as ui:
        yield ui, client, experiment.experiment_id, parent.info.run_id, children


@pytest.fixture
def browser(tmp_path):
    """A fresh profile per test: the UI keeps view state (expanded rows) in localStorage."""
    with Chromium(tmp_path) as b:
        yield b


def link(run_id: str) -> str:
    return f"document.querySelector('a[href*=\"/runs/{run_id}\"]')"


@pytest.mark.parametrize(
    "page", ["#/experiments/{id}?" + MODEL_TRAINING, "#/experiments/{id}/runs"], ids=["experiment", "runs"]
)
def test_the_experiment_opens_on_the_runs_table_and_the_parent_expands(sweep, browser, page):
    ui, _, experiment_id, parent_id, children = sweep
    browser.open(f"{ui.url}/{page.format(id=experiment_id)}")
    browser.wait(f"!!{link(parent_id)}", what=f"the parent run {PARENT} in the runs table")
    assert f"#/experiments/{experiment_id}/runs" in browser.evaluate("location.href")
    text = browser.text()
    assert PARENT in text and "matching runs" in text
    assert not [w for w in ("Token Usage", "Tokens per Trace", "Latency") if w in text]  # not the GenAI overview
    assert "trial-0" not in text  # the trials are nested under their parent, collapsed
    # the expander in the parent's Run Name cell, as a user clicks it
    assert browser.evaluate(
        f"(() => {{ {link(parent_id)}.closest('.ag-cell').querySelector('button').click(); return true }})()"
    )
    check = " && ".join(f"!!{link(run_id)}" for run_id in children.values())
    browser.wait(check, what="every trial's run under the expanded parent")
    assert set(children) <= set(browser.text().split())


def test_the_parent_chart_is_the_optimization_curve(sweep, browser):
    ui, client, experiment_id, parent_id, _ = sweep
    history = sorted(client.get_metric_history(parent_id, "best_valid_auc"), key=lambda m: m.step)
    assert [m.step for m in history] == [1, 2, 3, 4]
    browser.open(f"{ui.url}/#/experiments/{experiment_id}/runs/{parent_id}/model-metrics?{MODEL_TRAINING}")
    # the plotly chart whose card has the legend "<run name> (best_valid_auc)": its data
    curve = browser.wait(
        """(() => {
          for (const p of document.querySelectorAll('.js-plotly-plot')) {
            let card = p;  // the largest ancestor holding this chart only
            while (card.parentElement && card.parentElement.querySelectorAll('.js-plotly-plot').length === 1)
              card = card.parentElement;
            if (card.innerText.includes('(best_valid_auc)') && p.data && p.data.length)
              return {x: p.data[0].x, y: p.data[0].y};
          }
          return null;
        })()""",
        what="the best_valid_auc chart on the parent's Model metrics tab",
    )
    assert curve["x"] == [1, 2, 3, 4]
    assert curve["y"] == pytest.approx([m.value for m in history])
    assert curve["y"] == sorted(curve["y"])  # best so far: never worse
