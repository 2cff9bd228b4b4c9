"""A run's evaluation/report.html as a user meets it: in a real headless Chromium (Debian's
`chromium`) against `mlflow ui` on the local store of a real single run, the run's page, tab
Artifacts, folder evaluation, file report.html. MLflow 3.x's artifact viewer shows an HTML file
in a sandboxed iframe (sandbox="allow-scripts", src a blob: URL), which Chromium runs in a
process of its own: the checks run inside it over DevTools (tests/support/browser.py,
frame_wait). Skips only where Chromium is not installed (apt-get install -y chromium)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from tests.conftest import run_runner
from tests.support.browser import INSTALL_HINT, Chromium, MlflowUi

pytestmark = [pytest.mark.integration, pytest.mark.skipif(shutil.which("chromium") is None, reason=INSTALL_HINT)]

SMALL = ["data.demo.events=100000", "data.demo.customers=5000", "model.num_boost_round=30"]
SECTIONS = ["Data", "Model", "Metrics", "Charts"]
# In the report's frame, once every image is done loading (or failed): how many there are, how
# many decoded and laid out, and the section headings.
RENDERED = """(() => {
  const images = [...document.images];
  if (!images.length || !images.every(i => i.complete)) return null;
  const drawn = images.filter(i => i.naturalWidth > 0 && i.naturalHeight > 0 && i.getBoundingClientRect().width > 0);
  return {images: images.length, drawn: drawn.map(i => i.alt),
          headings: [...document.querySelectorAll('h2')].map(h => h.textContent.trim())};
})()"""


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One small run into runner's default local store (SQLite + artifact folder under ./mlruns)."""
    cwd = tmp_path_factory.mktemp("ui_report")
    proc = run_runner(SMALL, cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = cwd / "mlruns"
    backend = f"sqlite:///{store / 'mlflow.db'}"
    client = MlflowClient(backend)
    experiment = client.get_experiment_by_name("runner")
    (run,) = client.search_runs([experiment.experiment_id])
    with MlflowUi(backend, (store / "artifacts").as_uri(), cwd) as ui:
        yield ui, client, experiment.experiment_id, run.info.run_id


@pytest.fixture
def browser(tmp_path):
    with Chromium(tmp_path, 1280, 900) as b:
        yield b


def rendered(ui: MlflowUi, browser: Chromium, experiment_id: str, run_id: str, path: str) -> Any:
    iframe = ui.open_html_artifact(browser, experiment_id, run_id, path)
    return browser.frame_wait(iframe, RENDERED, what=f"{path}'s images loaded or failed")


def test_the_report_opens_in_the_artifact_viewer_and_its_charts_render(single, browser):
    ui, client, experiment_id, run_id = single
    logged = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run_id, "evaluation")}
    assert "report.html" in logged
    pngs = {name for name in logged if name.endswith(".png")}
    assert {"roc_curve.png", "feature_importance.png", "feature_contributions.png"} <= pngs
    seen = rendered(ui, browser, experiment_id, run_id, "evaluation/report.html")
    assert len(seen["drawn"]) == seen["images"] >= len(pngs), seen
    assert pngs <= set(seen["drawn"]), seen
    assert [h for h in seen["headings"] if h in SECTIONS] == SECTIONS, seen


def test_a_broken_chart_is_seen(single, browser, tmp_path):
    """The check above fails on a report whose image does not decode: the same page with its
    first chart's data replaced, logged beside it as broken/report.html."""
    ui, client, experiment_id, run_id = single
    html = Path(client.download_artifacts(run_id, "evaluation/report.html", str(tmp_path)))
    text, n = re.subn(
        r'src="data:image/png;base64,[^"]*"', 'src="data:image/png;base64,AAAA"', html.read_text(), count=1
    )
    assert n == 1
    broken = tmp_path / "broken" / "report.html"
    broken.parent.mkdir()
    broken.write_text(text)
    client.log_artifact(run_id, str(broken), "broken")
    seen = rendered(ui, browser, experiment_id, run_id, "broken/report.html")
    assert len(seen["drawn"]) == seen["images"] - 1, seen
