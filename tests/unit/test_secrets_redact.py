"""runner/secrets.py: passwords in URLs and known secret values masked."""

from __future__ import annotations

import pytest

from runner.secrets import redact_url, scrub

pytestmark = pytest.mark.unit


def test_redaction(monkeypatch):
    assert redact_url("postgresql://u:secret@127.0.0.1:5432/db") == "postgresql://u:***@127.0.0.1:5432/db"
    assert redact_url("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", "hunter2-canary")
    assert "hunter2" not in scrub("login failed for pw hunter2-canary")
