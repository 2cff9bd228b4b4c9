"""Keep credentials out of everything runner writes.

Credentials never enter our config; these helpers cover what can still carry
one: URLs with user:password, and log records that echo environment values.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Iterable, List
from urllib.parse import urlsplit, urlunsplit

SECRET_ENV = (
    "SNOWFLAKE_PASSWORD",
    "SNOWFLAKE_TOKEN",
    "SNOWFLAKE_PRIVATE_KEY_FILE_PWD",
    "SNOWFLAKE_PRIVATE_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "PGPASSWORD",
    "RUNNER_STORAGE_PASSWORD",
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
MASK = "***"


def redact_url(url: str) -> str:
    """postgresql://u:pw@h/db -> postgresql://u:***@h/db; other strings unchanged."""
    if not isinstance(url, str) or "@" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:{MASK}@{host}" if parts.username else f"{MASK}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def secret_values() -> List[str]:
    return [v for k in SECRET_ENV if len(v := os.environ.get(k, "")) >= 4]


def scrub(text: str, extra: Iterable[str] = ()) -> str:
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    for value in [*secret_values(), *extra]:
        text = text.replace(value, MASK)
    return text


class ScrubFilter(logging.Filter):
    """Masks credential values and URL passwords in every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_log_filter() -> None:
    flt = ScrubFilter()
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ScrubFilter) for f in handler.filters):
            handler.addFilter(flt)
