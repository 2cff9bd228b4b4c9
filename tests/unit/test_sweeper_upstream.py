"""Sweep configs written for hydra-optuna-sweeper search the same space here.

The cases are upstream's own: its test table (plugins/hydra_optuna_sweeper/tests/
test_optuna_sweeper_plugin.py, test_create_optuna_distribution_from_override) and the
overrides in its documentation (website/docs/plugins/optuna_sweeper.md). Each must give the
distribution upstream gives after Optuna's own normalisation (type, low, high, step, log,
choices; a shuffled range's choices as a set, as upstream's check compares them).
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hydra_plugins.runner_optuna_sweeper._search_space import grid_space, parse_space

pytestmark = pytest.mark.unit

UPSTREAM_TESTS = [
    ("key=choice(1,2)", CategoricalDistribution([1, 2])),
    ("key=choice(true, false)", CategoricalDistribution([True, False])),
    ("key=choice('hello', 'world')", CategoricalDistribution(["hello", "world"])),
    ("key=shuffle(range(1,3))", CategoricalDistribution((1, 2))),
    ("key=range(1,3)", IntDistribution(1, 3)),
    ("key=interval(1, 5)", FloatDistribution(1, 5)),
    ("key=int(interval(1, 5))", IntDistribution(1, 5)),
    ("key=tag(log, interval(1, 5))", FloatDistribution(1, 5, log=True)),
    ("key=tag(log, int(interval(1, 5)))", IntDistribution(1, 5, log=True)),
    ("key=range(0.5, 5.5, step=1)", FloatDistribution(0.5, 5.5, step=1)),
]
UPSTREAM_DOCS = [
    ("x=range(-5.5,5.5,step=0.5)", FloatDistribution(-5.5, 5.5, step=0.5)),
    ("y=choice(-5,0,5)", CategoricalDistribution([-5, 0, 5])),
    ("x=interval(-5.0, 5.0)", FloatDistribution(-5.0, 5.0)),
    ("y=interval(0, 10)", FloatDistribution(0, 10)),
    ("x=int(interval(-5.0, 5.0))", IntDistribution(-5, 5)),
    ("y=tag(log, interval(1, 10))", FloatDistribution(1, 10, log=True)),
    ("x=range(-5.0, 5.0)", FloatDistribution(-5.0, 5.0, step=1)),
    ("y=shuffle(range(-5, 5))", CategoricalDistribution(list(range(-5, 5)))),
    ("x=choice(-5.0, 0.0, 5.0)", CategoricalDistribution([-5.0, 0.0, 5.0])),
    ("y=choice(0, 1, 2, 3, 4, 5)", CategoricalDistribution([0, 1, 2, 3, 4, 5])),
    ("x=range(1,4)", IntDistribution(1, 4)),
    ("x=range(0, 5, step=0.5)", FloatDistribution(0, 5, step=0.5)),
    ("y=range(0, 3, step=0.5)", FloatDistribution(0, 3, step=0.5)),
    ("x=range(-5.5, 5.5, 0.5)", FloatDistribution(-5.5, 5.5, step=0.5)),
]


@pytest.mark.parametrize(
    "line, expected", UPSTREAM_TESTS + UPSTREAM_DOCS, ids=[c[0] for c in UPSTREAM_TESTS + UPSTREAM_DOCS]
)
def test_same_distribution_as_hydra_optuna_sweeper(line, expected):
    key = line.split("=", 1)[0]
    actual = parse_space({}, [line]).distributions[key]
    if isinstance(expected, CategoricalDistribution):
        assert isinstance(actual, CategoricalDistribution) and set(actual.choices) == set(expected.choices)
    else:
        assert actual == expected
        assert (type(actual), actual.low, actual.high, actual.step, actual.log) == (
            type(expected),
            expected.low,
            expected.high,
            expected.step,
            expected.log,
        )


def test_the_same_lines_from_yaml_params():
    params = {line.split("=", 1)[0]: line.split("=", 1)[1] for line, _ in UPSTREAM_TESTS[:1] + UPSTREAM_TESTS[4:]}
    space = parse_space(params)
    assert space.distributions["key"] == UPSTREAM_TESTS[-1][1]  # later entries win, as on the command line


def _exact(start: str, stop: str, step: str):
    """The values a person reads in range(start, stop, step), stop included when on the grid."""
    values, k = [], 0
    while Decimal(start) + k * Decimal(step) <= Decimal(stop):
        values.append(float(Decimal(start) + k * Decimal(step)))
        k += 1
    return values


STARTS = ["-1.0", "-0.3", "0.0", "0.1", "0.3", "0.5", "1.25", "2.2"]
STEPS = ["0.05", "0.1", "0.2", "0.25", "0.3", "0.7", "1.5"]


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("start", STARTS)
def test_float_ranges_keep_every_value(start, step):
    for n in range(0, 7):
        for extra in ("0", "0.01", "0.5"):  # stop on the grid, or a little / half a step past it
            stop = str(Decimal(start) + n * Decimal(step) + Decimal(extra) * Decimal(step))
            space = parse_space({}, [f"k=range({start}, {stop}, {step})"])
            dist = space.distributions["k"]
            expected = _exact(start, stop, step)
            assert grid_space(space)["k"] == expected, (start, stop, step)
            assert dist.low == expected[0] and dist.high == expected[-1] and dist.step == float(step)
            # Optuna keeps the high as given: it lies on the grid in its own decimal check.
            assert FloatDistribution(dist.low, dist.high, step=dist.step).high == dist.high
