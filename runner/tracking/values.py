"""Params, metrics and tags as MLflow takes them: flat keys, values within its limits,
credentials masked."""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from ..secrets import scrub, secret_values

log = logging.getLogger("runner.tracking")


def flatten(node: Any, prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    if isinstance(node, dict):
        if not node and prefix:
            out[prefix] = "{}"
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(node, list):
        out[prefix] = repr(node)
    else:
        out[prefix] = node
    return out


_SECRET_VALUES = bool(secret_values())


def fit(kind: str, key: str, value: Any, limit: int) -> Optional[str]:
    from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH

    if len(key) > MAX_ENTITY_KEY_LENGTH:
        log.warning("%s %r skipped: key longer than MLflow's %d characters", kind, key[:60], MAX_ENTITY_KEY_LENGTH)
        return None
    text = "None" if value is None else str(value)
    if "@" in text or _SECRET_VALUES:
        text = scrub(text)  # user:password@ in URLs (tracker.uri, storage) and known secret values
    if len(text) > limit:
        log.warning("%s %r truncated to MLflow's %d characters", kind, key, limit)
        text = text[: limit - 15] + "...[truncated]"
    return text


def tag_limit() -> int:
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

    return MAX_TAG_VAL_LENGTH
