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
