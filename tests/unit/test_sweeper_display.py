"""What the sweeper prints and writes as tables (hydra_plugins/.../_display.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from hydra_plugins.runner_optuna_sweeper._display import duration, fmt, markdown, progress_line, text_table

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "value, shown",
    [
        (0.123456, "0.1235"),
        (0.5, "0.5"),
        (1.0, "1"),
        (12.0, "12"),
        (0.001, "0.001"),
        (0.00012, "0.00012"),
        (12345.678, "1.235e+04"),
        (-0.25, "-0.25"),
        (0.0, "0"),
        (7, "7"),
        ("COMPLETE", "COMPLETE"),
        (None, "None"),
    ],
)
def test_fmt(value, shown):
    assert fmt(value) == shown


@pytest.mark.parametrize(
    "seconds, shown",
    [
        (-3, "0s"),
        (0, "0s"),
        (89.4, "89s"),
        (90, "1.5min"),
        (5399, "90.0min"),
        (5400, "1.5h"),
        (36000, "10.0h"),
    ],
)
def test_duration(seconds, shown):
    assert duration(seconds) == shown


@pytest.fixture
def table():
    return pd.DataFrame(
        [
            {
                "rank": 1,
                "trial": 3,
                "state": "COMPLETE",
                "valid_auc": 0.91234,
                "run_id": "abc",
                "model.params.num_leaves": 31,
                "model.params.learning_rate": 0.05,
            },
            {
                "rank": 2,
                "trial": 0,
                "state": "COMPLETE",
                "valid_auc": 0.9,
                "run_id": "def",
                "model.params.num_leaves": 15,
                "model.params.learning_rate": 0.00012,
            },
        ]
    )


def test_markdown(table):
    assert markdown(table) == (
        "| rank | trial | state | valid_auc | run_id | model.params.num_leaves | model.params.learning_rate |\n"
        "|---|---|---|---|---|---|---|\n"
        "| 1 | 3 | COMPLETE | 0.9123 | abc | 31 | 0.05 |\n"
        "| 2 | 0 | COMPLETE | 0.9 | def | 15 | 0.00012 |\n"
    )


def test_text_table(table):
    assert text_table(table).split("\n") == [
        "  rank  trial  state     valid_auc  run_id  num_leaves  learning_rate",
        "  1     3      COMPLETE  0.9123     abc     31          0.05         ",
        "  2     0      COMPLETE  0.9        def     15          0.00012      ",
    ]


def test_numeric_only_rows_show_ints_as_ints():
    # all-numeric rows come out of iterrows as floats: 3.0 must still read 3
    frame = pd.DataFrame([{"trial": 3, "valid_rmse": 0.25}])
    assert markdown(frame) == "| trial | valid_rmse |\n|---|---|\n| 3 | 0.25 |\n"


def test_progress_line():
    counts = {"finished": 3, "running": 2, "pruned": 1, "failed": 1, "best": (0.91234, 2)}
    line = progress_line(
        "runner-lightgbm", 4, "COMPLETE", [0.9], None, 1.25, counts, 10, "valid_auc", elapsed=120.0, session_done=3
    )
    assert line == (
        "[runner-lightgbm] trial 4 valid_auc=0.9000 in 1.2s | 3/10 done, 2 running, 1 pruned, "
        "1 failed | best valid_auc=0.9123 (#2) | 2.0min elapsed, ETA 4.7min"
    )
    none_yet = {"finished": 0, "running": 1, "pruned": 0, "failed": 1, "best": None}
    line = progress_line(
        "s", 0, "FAIL", None, "ValueError: " + "x" * 200, 0.04, none_yet, 2, "valid_auc", elapsed=5.0, session_done=0
    )
    assert line == (
        f"[s] trial 0 FAILED (ValueError: {'x' * 108}) in 0.0s | 0/2 done, 1 running, 0 pruned, "
        "1 failed | best - | 5s elapsed, ETA ?"
    )
    done = {"finished": 2, "running": 0, "pruned": 2, "failed": 0, "best": None}
    assert progress_line(
        "s", 1, "PRUNED", None, "pruned at round 5", 2.0, done, 2, "valid_auc", elapsed=4.0, session_done=2
    ).endswith("trial 1 pruned in 2.0s | 2/2 done, 0 running, 2 pruned, 0 failed | best - | 4s elapsed, ETA 0s")
