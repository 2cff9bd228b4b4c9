"""runner/data/files.py and the naming rules of runner/embedded/files.py: which files a config
names, their digests (the data version), and the errors that name the setting."""

from __future__ import annotations

import hashlib
import os

import pytest
from omegaconf import OmegaConf

from runner.data.files import check_files, file_format, file_tables, files_version, local_files, matches, sha256_of
from runner.embedded.files import column_types, identifier
from runner.errors import ConfigError

pytestmark = pytest.mark.unit


def _cfg(**data):
    return OmegaConf.create({"files": {}, "inputs": [], "path": None, **data})


def test_a_glob_matches_files_in_name_order_and_a_miss_names_the_setting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("b.csv", "a.csv", "c.parquet"):
        (tmp_path / name).write_text("x\n1\n")
    assert [os.path.basename(p) for p in matches("*.csv", "data.files.T")] == ["a.csv", "b.csv"]
    with pytest.raises(ConfigError, match=r"data.files.T='\*.tsv': no file matches"):
        matches("*.tsv", "data.files.T")
    with pytest.raises(ConfigError, match=r"data.path='nope.csv': no such file \(/"):
        matches("nope.csv", "data.path")


def test_formats_by_name(tmp_path):
    assert file_format("x.CSV") == "csv" and file_format("x.csv.gz") == "csv" and file_format("x.tsv") == "csv"
    assert file_format("x.parquet") == "parquet" and file_format("x.pq") == "parquet"
    assert file_format("x.xlsx") is None
    (tmp_path / "sheet.xlsx").write_bytes(b"PK")
    with pytest.raises(ConfigError, match=r"data.files.SHEET: .*sheet.xlsx is neither CSV"):
        check_files(_cfg(files={"SHEET": str(tmp_path / "sheet.xlsx")}))


def test_data_path_is_table_DATA_and_cannot_also_be_in_files(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("x\n1\n")
    assert file_tables(_cfg(path=str(f))) == {"DATA": (str(f), "data.path")}
    with pytest.raises(ConfigError, match="data.path loads table DATA, which data.files also names"):
        file_tables(_cfg(path=str(f), files={"data": str(f)}))


def test_an_edited_file_changes_the_version_and_an_untouched_one_does_not(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("x,y\n1,2\n")
    cfg = _cfg(files={"T": str(f)}, inputs=[str(f)])
    first = files_version(local_files(cfg))
    assert first == files_version(local_files(cfg)) and first.startswith("files:")
    st = os.stat(f)
    f.write_text("x,y\n1,3\n")  # same size, same mtime: only the bytes differ
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert files_version(local_files(cfg)) != first
    size, digest = sha256_of(str(f))
    assert size == 8 and digest == hashlib.sha256(b"x,y\n1,3\n").hexdigest()
    described = [x.describe() for x in local_files(cfg)]
    assert described[0] == {"path": str(f), "size": 8, "sha256": digest, "table": "T"}
    assert "table" not in described[1]  # a data.inputs file
    assert files_version([]) == ""


def test_column_names_become_snowflake_identifiers():
    assert identifier("sepal length (cm)") == "SEPAL_LENGTH__CM_"
    assert identifier("od280/od315_of_diluted_wines") == "OD280_OD315_OF_DILUTED_WINES"
    assert identifier("2nd") == "_2ND" and identifier("Amount$") == "AMOUNT$"


def test_column_types_are_checked_against_the_types_runner_loads():
    assert column_types(OmegaConf.create({"column_types": {"zip": "text", "Signup": "DATE"}})) == {
        "ZIP": "VARCHAR",
        "SIGNUP": "DATE",
    }
    with pytest.raises(ConfigError, match=r"data.column_types.zip='decimal' is not a type runner loads: use one of"):
        column_types(OmegaConf.create({"column_types": {"zip": "decimal"}}))
