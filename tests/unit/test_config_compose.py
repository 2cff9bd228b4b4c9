"""Every config group option composes and matches the typed schema; mistyped keys and wrong
types fail at compose time (Hydra's compose API in this process)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

import runner.config  # noqa: F401  (registers the schema)
from tests.conftest import REPO

CONF = str(REPO / "conf")

pytestmark = pytest.mark.unit


def _compose(overrides=()):
    with initialize_config_dir(version_base="1.3", config_dir=CONF):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("group", ["data", "model", "tracker"])
def test_every_option_composes(group):
    for path in sorted((REPO / "conf" / group).glob("*.yaml")):
        overrides = [f"{group}={path.stem}"]
        if path.stem == "sagemaker":
            overrides.append("tracker.uri=arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/x")
        if path.stem == "file":  # data.path and data.label are the user's (???)
            overrides += ["data.path=train.csv", "data.label=target"]
        cfg = _compose(overrides)
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def test_defaults():
    cfg = _compose()
    assert cfg.data.backend == "embedded"
    assert cfg.model.params.objective == "binary"
    assert cfg.tracker.kind == "local"
    assert OmegaConf.get_type(cfg.model.params).__name__ == "LightGBMParams"


def test_command_line_overrides():
    cfg = _compose(["model.params.num_leaves=63", "tracker=server", "tracker.uri=http://127.0.0.1:5000"])
    assert cfg.model.params.num_leaves == 63
    assert cfg.tracker.uri == "http://127.0.0.1:5000"


@pytest.mark.parametrize("override", ["model.params.num_leavs=63", "data.tabel=X", "tracker.experment=x"])
def test_mistyped_key_fails_at_compose(override):
    with pytest.raises(ConfigCompositionException):
        _compose([override])


@pytest.mark.parametrize(
    "override", ["model.params.num_leaves=many", "data.refresh=maybe", "model.num_boost_round=1.5"]
)
def test_wrong_type_fails_at_compose(override):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        _compose([override])
