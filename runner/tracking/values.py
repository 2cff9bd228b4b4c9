"""Params, metrics and tags as MLflow takes them: flat keys, values within its limits,
credentials masked."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

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


# Entities (params + tags + metric points) in one MLflow log_batch request: MLflow's
# MAX_ENTITIES_PER_BATCH (tests/unit checks they agree; mlflow is not imported here).
BATCH_ENTITIES = 1000

# Points of one learning curve in a run's log batch: enough to see its shape (and its best
# round), few enough that a run still logs in one request (MLflow: 1,000 entities a batch).
CURVE_POINTS = 100


def thin_curve(values: List[float], best: int, points: int = CURVE_POINTS) -> List[Tuple[int, float]]:
    """(round, value) of a metric's per-round values (round 1 first): evenly spaced rounds,
    the first, the best and the last always among them; at most `points` (when >= 3)."""
    n = len(values)
    if n <= points:
        rounds = set(range(1, n + 1))
    else:
        rounds = {1 + round(i * (n - 1) / (points - 2)) for i in range(points - 1)}  # first .. last
        if 1 <= best <= n and best not in rounds:
            rounds.discard(min(rounds - {1, n}, key=lambda r: abs(r - best)))  # the best takes its neighbour's place
            rounds.add(best)
    return [(r, values[r - 1]) for r in sorted(rounds)]


def curve_history(curves: Dict[str, List[float]], best: int, room: int) -> Dict[str, List[Tuple[int, float, int]]]:
    """Learning curves as metric histories `<metric>_by_round` (step: the boosting round),
    each thinned to CURVE_POINTS and all of them to `room` entities of the run's batch."""
    import time

    if not curves:
        return {}
    points = min(CURVE_POINTS, room // len(curves))
    if points < 3:
        log.warning("learning curves not logged: no room left in the run's log batch (%d entities)", room)
        return {}
    now = int(time.time() * 1000)
    return {
        f"{name}_by_round": [(r, v, now) for r, v in thin_curve(values, best, points)]
        for name, values in curves.items()
    }
