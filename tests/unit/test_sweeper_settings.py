"""The sweeper's typed settings (hydra_plugins/.../_settings.py)."""

from __future__ import annotations

from dataclasses import fields

import pytest
from omegaconf import OmegaConf

from hydra_plugins.runner_optuna_sweeper import _settings
from hydra_plugins.runner_optuna_sweeper.config import RunnerOptunaSweeperConf
from runner.errors import ConfigError

pytestmark = pytest.mark.unit


def test_defaults_come_from_config_py():
    s = _settings.from_kwargs({})
    defaults = RunnerOptunaSweeperConf()
    for f in fields(RunnerOptunaSweeperConf):
        assert getattr(s, f.name) == getattr(defaults, f.name)
    assert (s.n_trials, s.n_jobs, s.heartbeat_timeout, s.heartbeat_interval, s.top_k) == (20, None, 600.0, 30.0, 5)


def test_kwargs_as_hydra_passes_them_become_plain_values():
    cfg = OmegaConf.create(
        {
            "n_trials": 7,
            "sampler": {"_target_": "optuna.samplers.RandomSampler", "seed": 3},
            "params": {"model.params.num_leaves": "int(interval(15, 255))", "lr": "${shared}"},
            "metric": ["valid_auc", "valid_binary_logloss"],
            "direction": "maximize",
            "shared": "interval(0.01, 0.3)",
        }
    )
    # nested values arrive as OmegaConf containers (_recursive_: false), still attached to the config
    kwargs = {k: cfg[k] for k in ("n_trials", "sampler", "params", "metric", "direction")}
    assert OmegaConf.is_config(kwargs["params"])
    s = _settings.from_kwargs({**kwargs, "_target_": "x", "_recursive_": False})  # Hydra's keys: ignored
    assert s.n_trials == 7 and s.direction == "maximize"
    assert type(s.sampler) is dict and s.sampler == {"_target_": "optuna.samplers.RandomSampler", "seed": 3}
    assert type(s.params) is dict and s.params["lr"] == "interval(0.01, 0.3)"  # interpolation resolved
    assert type(s.metric) is list and s.metric == ["valid_auc", "valid_binary_logloss"]
    assert s._target_ == RunnerOptunaSweeperConf._target_


def test_unknown_setting_is_named():
    with pytest.raises(ConfigError, match=r"^hydra.sweeper.n_trails is not a setting"):
        _settings.from_kwargs({"n_trails": 5})


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("n_jobs", 0, "hydra.sweeper.n_jobs must be >= 1, got 0"),
        ("n_trials", 0, "hydra.sweeper.n_trials must be >= 1, got 0"),
        ("report_every", 0, "hydra.sweeper.report_every must be >= 1, got 0"),
        ("top_k", -1, "hydra.sweeper.top_k must be >= 1, got -1"),
        ("heartbeat_interval", 0.0, "hydra.sweeper.heartbeat_interval must be > 0 seconds, got 0.0"),
        ("heartbeat_timeout", -5.0, "hydra.sweeper.heartbeat_timeout must be > 0 seconds, got -5.0"),
    ],
)
def test_check_names_the_setting(key, value, message):
    _settings.check(_settings.from_kwargs({}))  # the defaults pass
    with pytest.raises(ConfigError) as err:
        _settings.check(_settings.from_kwargs({key: value}))
    assert str(err.value) == message


@pytest.mark.parametrize(
    "given, in_process, cores, expected",
    [
        ({}, True, 2, 2),  # fast: trials at once from the machine
        ({}, True, 16, 4),  # at most MAX_AUTO_JOBS
        ({}, True, 1, 1),
        ({"strategy": "plain"}, True, 16, 1),  # plain: one at a time
        ({}, False, 16, 1),  # a Hydra launcher: its own jobs
        ({"n_jobs": 3, "strategy": "plain"}, True, 2, 3),  # as set
    ],
)
def test_trials_at_once(monkeypatch, given, in_process, cores, expected):
    monkeypatch.setattr(_settings.os, "cpu_count", lambda: cores)
    assert _settings.workers(_settings.from_kwargs(given), in_process) == expected
    # a config written for hydra-optuna-sweeper: its default, one at a time, unless it says
    assert _settings.workers(_settings.from_kwargs(given), in_process, upstream=True) == given.get("n_jobs", 1)


def test_plain_searches_plain_params_when_set():
    wide, narrow = {"a": "interval(0, 1)"}, {"a": "interval(0.5, 1)"}
    both = {"params": wide, "plain_params": narrow}
    assert _settings.space_of(_settings.from_kwargs(both)) == (wide, "hydra.sweeper.params")
    assert _settings.space_of(_settings.from_kwargs({**both, "strategy": "plain"})) == (
        narrow,
        "hydra.sweeper.plain_params",
    )
    assert _settings.space_of(_settings.from_kwargs({"params": wide, "strategy": "plain"})) == (
        wide,
        "hydra.sweeper.params",
    )
