"""runner/data/definition.py and sql.py: identifiers checked before the warehouse, source tables read from the SQL."""

from __future__ import annotations

import pytest

from runner.data import check_identifier, source_tables
from runner.errors import ConfigError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["EVENTS", "db.schema.t", '"My Table"', "a$b"])
def test_identifiers_accepted(name):
    check_identifier(name, "data.table", qualified=True)


@pytest.mark.parametrize("name", ["X; DROP TABLE Y", "a b", "t--", "1abc", "a.b.c.d", ""])
def test_identifiers_rejected(name):
    with pytest.raises(ConfigError, match="data.table"):
        check_identifier(name, "data.table", qualified=True)


def test_source_tables():
    sql = "with x as (select * from A.B.EVENTS) select * from x join customers c on 1=1"
    assert source_tables(sql) == ["A.B.EVENTS", "CUSTOMERS"]


def failing_features(session, cfg):
    """A user's feature function that fails on its own (data.features._target_)."""
    raise KeyError("no column 'AGE' in customers.csv")


def test_a_failing_feature_function_keeps_its_error_and_traceback():
    from omegaconf import OmegaConf

    from runner.config import DataConfig
    from runner.data import build_frame

    target = f"{__name__}.failing_features"
    cfg = OmegaConf.merge(
        OmegaConf.structured(DataConfig), {"features": {"_target_": target}, "entity_key": "ID", "label": "Y"}
    )
    with pytest.raises(ConfigError) as err:
        build_frame(object(), cfg)
    assert str(err.value) == f"data.features._target_={target!r} raised KeyError: \"no column 'AGE' in customers.csv\""
    assert isinstance(err.value.__cause__, KeyError)  # the user's traceback, for HYDRA_FULL_ERROR=1
