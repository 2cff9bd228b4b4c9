"""The one-page report of a model: its data, its params, its metrics, its charts; for a single
run, and (with the sweep's sections added) for a sweep's best trial."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from . import page
from .build import Report

HISTORIES = ("_by_round", "_by_train_rows")  # metric histories, not one value
KEY_PARAMS = (
    "objective",
    "learning_rate",
    "num_leaves",
    "max_depth",
    "min_child_samples",
    "feature_fraction",
    "bagging_fraction",
    "lambda_l1",
    "lambda_l2",
    "max_bin",
    "num_class",
)


def label_balance(prepared: Any) -> str:
    rows = []
    for name, y in ((name, part.y) for name, part in prepared.parts.items()):
        if prepared.objective == "regression":
            rows.append(
                [name, len(y), float(np.mean(y)) if len(y) else float("nan"), float(np.std(y)) if len(y) else 0.0]
            )
        else:
            counts = np.bincount(np.asarray(y, dtype=int), minlength=len(prepared.classes or [0, 1]))
            rows.append([name, len(y), *[f"{c:,} ({c / max(1, len(y)):.1%})" for c in counts]])
    if prepared.objective == "regression":
        return page.table(["split", "rows", "label mean", "label std"], rows)
    return page.table(["split", "rows", *[f"label {c}" for c in (prepared.classes or [0, 1])]], rows)


def sections(
    prepared: Any,
    params: Dict[str, Any],
    metrics: Dict[str, float],
    report: Report,
    data_facts: Sequence[Tuple[str, Any]],
    query: str,
) -> List[Tuple[str, str]]:
    """The sections every model's report has: data, model, metrics, charts, contributions."""
    data = page.facts(
        [
            ("features", f"{len(prepared.features)} ({len(prepared.categorical)} categorical)"),
            *data_facts,
        ]
    )
    model = page.facts(
        [(k, params[k]) for k in KEY_PARAMS if k in params] + [("best_iteration", metrics.get("best_iteration"))]
    )
    runner_names = sorted(
        {k.split("_", 1)[1] for k in metrics if k.startswith(("valid_", "test_")) and not k.endswith(HISTORIES)}
    )
    rows = [[n, metrics.get(f"valid_{n}", ""), metrics.get(f"test_{n}", "")] for n in runner_names]
    contributions = report.tables.get("feature_contributions.csv")
    top = ""
    if contributions:
        import io

        import pandas as pd

        frame = pd.read_csv(io.StringIO(contributions), keep_default_na=False).head(20)
        top = page.table(list(frame.columns), frame.itertuples(index=False))
    out = [
        ("Data", data + label_balance(prepared) + (f"<pre>{page.esc(query)}</pre>" if query else "")),
        ("Model", model),
        ("Metrics", page.table(["metric", "valid", "test"], rows)),
        ("Charts", page.charts(report.images) + "".join(f"<p>{page.esc(n)}</p>" for n in report.notes)),
        ("Feature contributions (mean |SHAP value|, top 20)", top),
    ]
    return out
