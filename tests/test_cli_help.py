"""`python -m runner --help` lists the config groups and their options without composing a
config or running anything (a real runner process)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_help_lists_groups_without_composing(tmp_path):
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "runner", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0
    assert "tracker: local, sagemaker, server" in res.stdout
    assert "data: demo, file, snowflake" in res.stdout
    assert not list(tmp_path.iterdir())  # no output folder, nothing run
