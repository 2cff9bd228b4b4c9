"""The sweeper's search-space grammar (Hydra's override parser -> Optuna distributions), table-driven."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hydra_plugins.runner_optuna_sweeper._search_space import check_keys, encode, enqueued, grid_space, parse_space
from runner.errors import ConfigError, RunnerError

pytestmark = pytest.mark.unit

KEY = "model.params.num_leaves"
WHERE = f"hydra.sweeper.params.{KEY}"

GOOD = [
    ("int(interval(15, 255))", IntDistribution(15, 255)),
    ("interval(0.5, 1.0)", FloatDistribution(0.5, 1.0)),
    ("interval(1, 2)", FloatDistribution(1.0, 2.0)),  # Hydra's interval is float unless int(...)
    ("tag(log, interval(0.01, 0.3))", FloatDistribution(0.01, 0.3, log=True)),
    ("tag(log, interval(1e-3, 10))", FloatDistribution(1e-3, 10.0, log=True)),
    ("tag(log, int(interval(1, 100)))", IntDistribution(1, 100, log=True)),
    ("range(15, 256, 16)", IntDistribution(15, 255, step=16)),  # high = the last value on the grid
    ("range(15, 255, 16)", IntDistribution(15, 255, step=16)),  # stop on the grid: included (upstream)
    ("range(1, 4)", IntDistribution(1, 4)),
    ("range(0.1, 0.5, 0.1)", FloatDistribution(0.1, 0.5, step=0.1)),
    ("range(0.3, 1.0, 0.3)", FloatDistribution(0.3, 0.9, step=0.3)),  # 0.9 kept (no float drift)
    ("choice(15, 31, 63)", CategoricalDistribution([15, 31, 63])),
    ("15,31,63", CategoricalDistribution([15, 31, 63])),
    ("choice(gbdt, dart)", CategoricalDistribution(["gbdt", "dart"])),
    ("choice(true, false)", CategoricalDistribution([True, False])),
    ("interval(3, 3)", FloatDistribution(3.0, 3.0)),
]

BAD = [
    ("int(interval(300, 255))", "low 300 > high 255"),
    ("interval(1.0, 0.5)", "low 1.0 > high 0.5"),
    ("range(10, 5)", "low 10 > high 5"),
    ("range(1, 10, -1)", "step must be positive"),
    ("choice()", "empty choice"),
    ("tag(log, interval(0, 1))", "needs low > 0"),
    ("tag(log, interval(-1, 1))", "needs low > 0"),
    ("tag(foo, interval(1, 2))", "unknown tag 'foo'"),
    ("tag(log, choice(1, 2))", "interval(...) only"),
    ("tag(log, range(1, 5))", "interval(...) only"),
    ("choice(1, 1)", "duplicate"),
    ("interval(1", "no viable alternative"),
    ("choice([1,2], 3)", "must be strings, numbers or booleans"),
]


@pytest.mark.parametrize("text,expected", GOOD, ids=[g[0] for g in GOOD])
def test_good_grammar(text, expected):
    space = parse_space({KEY: text})
    assert space.distributions == {KEY: expected}
    assert space.fixed == {}


@pytest.mark.parametrize("text,message", BAD, ids=[b[0] for b in BAD])
def test_bad_grammar_names_the_param(text, message):
    with pytest.raises(ConfigError) as info:
        parse_space({KEY: text})
    assert str(info.value).startswith(f"{WHERE}: "), str(info.value)
    assert message in str(info.value)
    assert isinstance(info.value, RunnerError)


def test_command_line_sweeps_win_and_are_named():
    space = parse_space({KEY: "int(interval(15, 255))"}, ["model.params.num_leaves=choice(7, 9)"])
    assert space.distributions[KEY] == CategoricalDistribution([7, 9])
    with pytest.raises(
        ConfigError,
        match=r"^command line 'model.params.num_leaves=int\(interval\(9, 7\)\)': "
        r"low 9 > high 7",
    ):
        parse_space({}, ["model.params.num_leaves=int(interval(9, 7))"])


def test_fixed_values_pass_through():
    space = parse_space({KEY: "int(interval(15, 255))", "model.params.max_bin": "63", "model.params.seed": 3})
    assert space.fixed == {"model.params.max_bin": "63", "model.params.seed": "3"}
    assert list(space.distributions) == [KEY]


CFG = OmegaConf.create({"model": {"params": {"num_leaves": 31, "learning_rate": 0.1}}, "run_name": None})

KEYS = [
    ({KEY: "int(interval(15, 255))"}, None),
    ({"run_name": "choice(a, b)"}, None),  # a key whose value is null still exists
    ({"+model.params.extra_trees": "choice(true, false)"}, None),  # + adds a key
    (
        {"model.params.num_leavez": "int(interval(15, 255))"},
        "hydra.sweeper.params.model.params.num_leavez: model.params.num_leavez is not in the config "
        "(keys of model.params: num_leaves, learning_rate)",
    ),
    ({"modle.params.num_leaves": "int(interval(15, 255))"}, "modle.params.num_leaves is not in the config"),
    ({"model.params.nope": "7"}, "hydra.sweeper.params.model.params.nope: model.params.nope is not in the config"),
]


@pytest.mark.parametrize("params,message", KEYS, ids=[list(k[0])[0] for k in KEYS])
def test_keys_must_exist_in_the_composed_config(params, message):
    space = parse_space(params)
    if message is None:
        check_keys(space, CFG)
    else:
        with pytest.raises(ConfigError) as info:
            check_keys(space, CFG)
        assert message in str(info.value)


@pytest.mark.parametrize("value", [0.1, 1e-5, 3, True, False, "gbdt", "a b", "x,y", "it's", "1.5e3x"])
def test_sampled_values_round_trip_through_hydras_parser(value):
    override = OverridesParser.create().parse_override(f"k={encode(value)}")
    assert override.value() == value and type(override.value()) is type(value)


def test_grid_space_from_discrete_params_only():
    space = parse_space({"a": "choice(x, y)", "b": "range(1, 4)", "c": "range(0.1, 0.3, 0.1)"})
    assert grid_space(space) == {"a": ["x", "y"], "b": [1, 2, 3, 4], "c": [0.1, 0.2, 0.3]}
    with pytest.raises(ConfigError, match=r"hydra.sweeper.params.d: the grid sampler needs choice"):
        grid_space(parse_space({"d": "interval(0, 1)"}))


@pytest.mark.parametrize("multivariate", [None, False])
def test_default_tpe_samples_as_optuna_does(multivariate):
    """hydra/sweeper/sampler=tpe with seed 0 draws the same trials as Optuna's own
    TPESampler(seed=0) (its defaults, not ours: Optuna 5's TPE is multivariate)."""
    import math

    import optuna

    from hydra_plugins.runner_optuna_sweeper._samplers import build
    from hydra_plugins.runner_optuna_sweeper.config import TPESamplerConfig

    node = OmegaConf.structured(TPESamplerConfig(seed=0, multivariate=multivariate))
    ours, desc = build("sampler", node)
    theirs = optuna.samplers.TPESampler(seed=0, **({} if multivariate is None else {"multivariate": False}))
    assert desc["name"] == "TPESampler" and ("multivariate" in desc["options"]) == (multivariate is not None)
    space = {
        "lr": FloatDistribution(0.01, 0.3, log=True),
        "leaves": IntDistribution(15, 255),
        "ff": FloatDistribution(0.5, 1.0),
    }

    def drawn(sampler):
        study = optuna.create_study(sampler=sampler)
        for _ in range(14):  # past n_startup_trials=10, into TPE proper
            trial = study.ask(space)
            study.tell(
                trial,
                (math.log(trial.params["lr"]) + 3) ** 2
                + (trial.params["leaves"] - 60) ** 2 / 1e4
                + trial.params["ff"] * trial.params["lr"],
            )
        return [t.params for t in study.trials]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    assert drawn(ours) == drawn(theirs)
    if multivariate is None:  # and the default differs from the univariate TPE we used to pin
        assert drawn(ours)[10:] != drawn(optuna.samplers.TPESampler(seed=0, multivariate=False))[10:]


def test_enqueued_trials_keep_what_lies_inside_the_space():
    """The command line may narrow the space: a value outside it (or a param not searched) is
    left to the sampler, with a note; a trial left empty is not enqueued; a non-mapping is an error."""
    where = "hydra.sweeper.params"
    space = parse_space(
        {
            "model.params.num_leaves": "tag(log, int(interval(4, 512)))",
            "model.params.learning_rate": "tag(log, interval(0.01, 0.3))",
            "model.params.boosting": "choice(gbdt, dart)",
        },
        where=where,
    )
    first = [{"model.params.num_leaves": 8, "model.params.learning_rate": 0.1}, {"model.params.boosting": "dart"}]
    assert enqueued(first, space, where) == (first, []) and enqueued(None, space, where) == ([], [])
    trials, notes = enqueued(
        [
            {"model.params.max_bin": 63, "model.params.num_leaves": 1024, "model.params.learning_rate": 0.05},
            {"model.params.num_leaves": 8.5, "model.params.learning_rate": "fast", "model.params.boosting": "goss"},
        ],
        space,
        where,
    )
    assert trials == [{"model.params.learning_rate": 0.05}]
    assert notes == [
        "hydra.sweeper.enqueue_trials[0]: model.params.max_bin is not searched in hydra.sweeper.params: left out",
        "hydra.sweeper.enqueue_trials[0]: model.params.num_leaves=1024 is outside tag(log, int(interval(4, 512))) "
        "(hydra.sweeper.params): sampled instead",
        "hydra.sweeper.enqueue_trials[1]: model.params.num_leaves=8.5 is outside tag(log, int(interval(4, 512))) "
        "(hydra.sweeper.params): sampled instead",
        "hydra.sweeper.enqueue_trials[1]: model.params.learning_rate='fast' is outside tag(log, interval(0.01, 0.3)) "
        "(hydra.sweeper.params): sampled instead",
        "hydra.sweeper.enqueue_trials[1]: model.params.boosting='goss' is outside choice(gbdt, dart) "
        "(hydra.sweeper.params): sampled instead",
    ]
    with pytest.raises(ConfigError, match=r"enqueue_trials\[1\] must be a mapping of param: value, got 8"):
        enqueued([{}, 8], space, where)
