"""Regenerate docs/ui-runs-table.png: the MLflow runs table of a demo sweep, parent expanded;
with --report, docs/report-in-ui.png: a demo run's evaluation/report.html in the UI.

    python docs/screenshot.py [--trials 8] [--out docs/ui-runs-table.png]
    python docs/screenshot.py --report [--out docs/report-in-ui.png]

From the repo root with the project installed (`pip install -e '.[test]'`) and Chromium
(`apt-get install -y chromium`). In a temporary folder it runs the demo sweep
(`python -m runner --multirun sweep=lightgbm hydra.sweeper.n_trials=N`, the embedded
warehouse and the local store), starts `mlflow ui` on that store on a free loopback port,
and in headless Chromium (tests/support/browser.py) opens the experiment in the UI's Model
training view with a few metric and param columns shown, closes the assistant panel,
clicks the parent run's expander and saves the viewport, cropped below the last row.
--report runs the demo (`python -m runner`) instead, opens the run's page, tab Artifacts,
evaluation, report.html (MlflowUi.open_html_artifact), closes the assistant panel, scrolls the
report to its Charts section and saves the 1280x900 viewport.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.browser import Chromium, MlflowUi  # noqa: E402

COLUMNS = [
    "attributes.`Duration`",
    "attributes.`Models`",
    "metrics.`best_valid_auc`",
    "metrics.`valid_auc`",
    "metrics.`test_auc`",
    "params.`model.params.learning_rate`",
    "params.`model.params.num_leaves`",
]
WIDTHS = {  # wide enough for the param names and most of the values
    "attributes.`Models`": 100,
    "metrics.`best_valid_auc`": 130,
    "metrics.`valid_auc`": 130,
    "metrics.`test_auc`": 130,
    "params.`model.params.learning_rate`": 190,
    "params.`model.params.num_leaves`": 170,
}
CLOSE_ASSISTANT = (
    "(() => { const b = document.querySelector('button[data-component-id=\"mlflow.assistant.chat_panel.close\"]');"
    " if (b) b.click(); return true })()"
)


def sweep(cwd: Path, trials: int) -> None:
    cmd = [sys.executable, "-m", "runner", "--multirun", "sweep=lightgbm", f"hydra.sweeper.n_trials={trials}"]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def shoot(cwd: Path, out: Path, width: int, height: int) -> None:
    from mlflow import MlflowClient

    store = cwd / "mlruns"
    backend = f"sqlite:///{store / 'mlflow.db'}"
    client = MlflowClient(backend)
    experiment = client.get_experiment_by_name("runner").experiment_id
    runs = client.search_runs([experiment])
    (parent,) = [r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r.info.run_id for r in runs if "mlflow.parentRunId" in r.data.tags]
    link = f"document.querySelector('a[href*=\"/runs/{parent}\"]')"
    with MlflowUi(backend, (store / "artifacts").as_uri(), cwd) as ui, Chromium(cwd, width, height) as b:
        # the columns, as a user picks them once (the UI keeps them in localStorage per experiment)
        b.open(f"{ui.url}/#/")
        b.wait("document.readyState === 'complete'")
        key = f'MLflowLocalStorage-1.1-ExperimentPage-["{experiment}"]-ReactComponentState'
        order = ["attributes.`Run Name`", "runDateAndNestInfo", "duration", *WIDTHS]  # widths go with an order
        state = json.dumps({"selectedColumns": COLUMNS, "columnOrder": order, "columnWidths": WIDTHS})
        b.evaluate(f"localStorage.setItem({json.dumps(key)}, {json.dumps(state)}), true")
        b.open(f"{ui.url}/#/experiments/{experiment}/runs?workflowType=machine_learning")
        b.wait(f"!!{link}", what="the parent run in the runs table")
        b.wait("!!document.querySelector('button[data-component-id=\"mlflow.assistant.chat_panel.close\"]')", 20)
        b.evaluate(CLOSE_ASSISTANT)
        b.evaluate(f"{link}.closest('.ag-cell').querySelector('button').click(), true")
        b.wait(" && ".join(f"!!document.querySelector('a[href*=\"/runs/{c}\"]')" for c in children))
        time.sleep(1.0)  # let the row animation settle
        bottom = b.evaluate(
            "Math.max(...[...document.querySelectorAll('.ag-row')].map(r => r.getBoundingClientRect().bottom))"
        )
        b.screenshot(out)
    crop(out, int(bottom) + 48)


def single(cwd: Path) -> None:
    cmd = [sys.executable, "-m", "runner"]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def shoot_report(cwd: Path, out: Path, width: int, height: int) -> None:
    from mlflow import MlflowClient

    store = cwd / "mlruns"
    backend = f"sqlite:///{store / 'mlflow.db'}"
    client = MlflowClient(backend)
    experiment = client.get_experiment_by_name("runner").experiment_id
    (run,) = [r.info.run_id for r in client.search_runs([experiment])]
    with MlflowUi(backend, (store / "artifacts").as_uri(), cwd) as ui, Chromium(cwd, width, height) as b:
        iframe = ui.open_html_artifact(b, experiment, run, "evaluation/report.html")
        b.evaluate(CLOSE_ASSISTANT)
        b.frame_wait(iframe, "[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        charts = "[...document.querySelectorAll('h2')].find(h => h.textContent === 'Charts')"
        b.frame_evaluate(iframe, f"{charts}.scrollIntoView(), true")
        time.sleep(1.0)  # the panel's closing animation
        b.screenshot(out)
    crop(out, height)


def crop(path: Path, bottom: int) -> None:
    """Cut the empty page below the table; palette PNG (the UI has few colours)."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        img = img.crop((0, 0, img.width, min(img.height, max(bottom, 300))))
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", action="store_true", help="a demo run's report.html instead of the runs table")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--out", type=Path, help="default docs/ui-runs-table.png, with --report docs/report-in-ui.png")
    ap.add_argument("--width", type=int, help="default 1680, with --report 1280")
    ap.add_argument("--height", type=int, default=900)
    args = ap.parse_args()
    args.out = args.out or REPO / "docs" / ("report-in-ui.png" if args.report else "ui-runs-table.png")
    width = args.width or (1280 if args.report else 1680)
    with tempfile.TemporaryDirectory(prefix="runner-screenshot-") as tmp:
        if args.report:
            single(Path(tmp))
            shoot_report(Path(tmp), args.out.resolve(), width, args.height)
        else:
            sweep(Path(tmp), args.trials)
            shoot(Path(tmp), args.out.resolve(), width, args.height)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
