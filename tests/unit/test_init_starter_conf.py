"""runner/init.py: the starter conf/ is written whole, or not at all."""

from __future__ import annotations

import pytest

from runner.init import main, write_starter

pytestmark = pytest.mark.unit


def test_writes_every_starter_file_and_refuses_to_overwrite(tmp_path, capsys):
    written = write_starter(tmp_path)
    names = sorted(str(p.relative_to(tmp_path)) for p in written)
    assert names == [
        "conf/README.md",
        "conf/data/my_files.yaml",
        "conf/data/my_query.yaml",
        "conf/data/my_table.yaml",
        "conf/project.yaml",
        "conf/sweep/my_sweep.yaml",
        "conf/tracker/my_sagemaker.yaml",
        "conf/tracker/my_server.yaml",
    ]
    assert "FILL IN" in (tmp_path / "conf" / "data" / "my_table.yaml").read_text()
    (tmp_path / "conf" / "sweep" / "my_sweep.yaml").write_text("mine\n")
    with pytest.raises(FileExistsError):
        write_starter(tmp_path)
    assert main([str(tmp_path)]) == 2
    assert "not overwriting existing files" in capsys.readouterr().err
    assert (tmp_path / "conf" / "sweep" / "my_sweep.yaml").read_text() == "mine\n"


def test_nothing_is_written_when_one_file_exists(tmp_path):
    (tmp_path / "conf" / "data").mkdir(parents=True)
    (tmp_path / "conf" / "data" / "my_query.yaml").write_text("mine\n")
    with pytest.raises(FileExistsError, match="my_query.yaml"):
        write_starter(tmp_path)
    assert sorted(p.name for p in (tmp_path / "conf").rglob("*") if p.is_file()) == ["my_query.yaml"]
