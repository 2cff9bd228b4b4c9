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


def _data(**over):
    from omegaconf import OmegaConf

    from runner.config import DataConfig

    cfg = OmegaConf.structured(DataConfig)
    cfg.merge_with(over)
    return cfg


def test_local_files_are_for_the_embedded_warehouse_only(tmp_path):
    from runner.data import validate

    (tmp_path / "t.csv").write_text("ID,Y\n1,0\n")
    cfg = _data(backend="snowflake", files={"T": str(tmp_path / "t.csv")}, table="T", entity_key="ID", label="Y")
    with pytest.raises(
        ConfigError, match=r"data.files loads local files into the embedded warehouse only \(data.backend='snowflake'\)"
    ):
        validate(cfg)


def test_a_null_entity_key_is_the_row_position_of_a_file_table_only(tmp_path, capsys):
    from runner.data import find_column, validate
    from runner.errors import DataError

    (tmp_path / "t.csv").write_text("ID,Y\n1,0\n")
    cfg = _data(path=str(tmp_path / "t.csv"), table="DATA", entity_key=None, label="Y")
    validate(cfg)
    assert cfg.entity_key == "RUNNER_ROW" and "rows keyed by their position in the file" in capsys.readouterr().out
    cfg = _data(path=str(tmp_path / "t.csv"), query="select * from DATA", entity_key=None, label="Y")
    with pytest.raises(ConfigError, match="data.entity_key is null: set it to a column unique per row"):
        validate(cfg)
    # A quoted column name keeps its case, as in Snowflake; an unquoted one matches any case.
    assert find_column(["ID", "target"], "TARGET", "data.label") == "target"
    with pytest.raises(DataError, match=r"data.label='\"TARGET\"' is quoted, so its case counts"):
        find_column(["ID", "target"], '"TARGET"', "data.label")
