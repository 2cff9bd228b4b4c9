"""runner/data/sample.py: data.sample checked and turned into warehouse SQL, before any run;
its forms on Hydra's command line (compose API in this process)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from runner.config import DataConfig
from runner.data import validate
from runner.data.offline import config_digest
from runner.data.sample import BUCKETS, Sample, sample_of, sample_sql
from runner.errors import ConfigError
from tests.conftest import REPO

pytestmark = pytest.mark.unit

CONF = str(REPO / "conf")


def _compose(*overrides):
    with initialize_config_dir(version_base="1.3", config_dir=CONF):
        return compose(config_name="config", overrides=["data=synthetic", *overrides])


def _data(sample):
    base = OmegaConf.structured(DataConfig)
    return OmegaConf.merge(base, {"table": "SYNTH", "entity_key": "ID", "label": "Y", "sample": sample})


def test_all_rows_by_default_and_with_null():
    assert sample_of(_compose().data) is None  # fraction and rows both null
    assert sample_of(_compose("data.sample=null").data) is None
    assert sample_of(_data(None)) is None


def test_long_forms_on_the_command_line():
    cfg = _compose("data.sample.fraction=0.2", "data.sample.seed=3")
    assert sample_of(cfg.data) == Sample(seed=3, fraction=0.2)
    assert sample_of(_compose("data.sample.rows=5000").data) == Sample(seed=0, rows=5000)
    assert sample_of(_compose("data.sample={fraction: 0.1, seed: 2}").data) == Sample(seed=2, fraction=0.1)


@pytest.mark.parametrize(
    "override", ["data.sample=0.1", "data.sample=5000", "data.sample.fraction=abc", "data.sample.frac=0.1"]
)
def test_short_forms_and_wrong_types_fail_at_compose_naming_the_setting(override):
    with pytest.raises(ConfigCompositionException, match=r"data\.sample"):
        _compose(override)


@pytest.mark.parametrize(
    "sample, message",
    [
        ({"fraction": 1.5}, r"data\.sample\.fraction must be in \(0, 1\), got 1\.5"),
        ({"fraction": 1.0}, r"data\.sample\.fraction must be in \(0, 1\), got 1\.0"),
        ({"fraction": 0.0}, r"data\.sample\.fraction must be in \(0, 1\), got 0\.0"),
        ({"fraction": -0.2}, r"data\.sample\.fraction must be in \(0, 1\), got -0\.2"),
        ({"rows": 0}, r"data\.sample\.rows must be a positive whole number of rows, got 0"),
        ({"rows": -3}, r"data\.sample\.rows must be a positive whole number of rows, got -3"),
        ({"fraction": 0.1, "rows": 10}, r"data\.sample\.fraction or data\.sample\.rows, not both"),
    ],
)
def test_bad_values_are_one_config_error_naming_the_setting(sample, message):
    cfg = _data(sample)
    with pytest.raises(ConfigError, match=message):
        sample_of(cfg)
    with pytest.raises(ConfigError, match=message):  # validate(): before any run exists
        validate(cfg)


def test_a_config_without_the_schema_gets_the_same_checks():
    for value in (0.1, "half"):
        cfg = OmegaConf.create({"entity_key": "ID", "sample": value})
        with pytest.raises(ConfigError, match=r"data\.sample must be null or a mapping .*got"):
            sample_of(cfg)
    with pytest.raises(ConfigError, match=r"data\.sample\.seed must be a whole number, got 'x'"):
        sample_of(OmegaConf.create({"sample": {"fraction": 0.5, "seed": "x"}}))


def test_sql_of_a_fraction_and_of_a_number_of_rows():
    sql = "SELECT * FROM SYNTH"
    assert sample_sql(sql, "ID", Sample(seed=1, fraction=0.2)) == (
        "select * from (SELECT * FROM SYNTH) where abs(hash(ID, 1)) % 1000000000 < 200000000"
    )
    assert sample_sql(sql, '"Id"', Sample(seed=7, rows=5000)) == (
        'select * from (SELECT * FROM SYNTH) order by abs(hash("Id", 7)) % 1000000000, "Id" limit 5000'
    )


def test_threshold_keeps_at_least_one_bucket():
    assert Sample(seed=0, fraction=0.25).threshold == BUCKETS // 4
    assert Sample(seed=0, fraction=1e-12).threshold == 1


def test_the_source_records_the_sample():
    assert Sample(seed=1, fraction=0.2).describe() == {"fraction": 0.2, "seed": 1}
    assert Sample(seed=0, rows=5000).describe() == {"rows": 5000, "seed": 0}


def test_the_sample_is_part_of_the_data_config_digest():
    full = config_digest(_data(None))
    one = config_digest(_data({"fraction": 0.2, "seed": 1}))
    two = config_digest(_data({"fraction": 0.2, "seed": 2}))
    assert len({full, one, two}) == 3
    assert config_digest(_data({"fraction": 0.2, "seed": 1})) == one
