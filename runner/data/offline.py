"""Features from the cache without asking the warehouse.

Two cases: a warm run on the embedded warehouse (its data is made by runner's own seed
script, so the config and the code decide it: no need to start the warehouse), and a
run whose warehouse is unreachable (the last pull of the same data config, said so).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .cache import FeatureCache
from .definition import check_frame
from .featureset import FeatureSet
from .files import files_version, local_files

if TYPE_CHECKING:
    from omegaconf import DictConfig

# Data settings that do not change which rows a feature definition yields.
_NOT_CONTENT = ("refresh", "cache_dir", "network_timeout", "query_tag", "split")


# The modules whose source decides an embedded pull: the seed scripts and the pull path.
_FEATURE_CODE = (
    "runner.embedded.demo",
    "runner.embedded.synthetic",
    "runner.embedded.files",
    "runner.data.definition",
    "runner.data.sql",
    "runner.data.pull",
    "runner.data.sample",
)


def config_digest(data_cfg: DictConfig) -> str:
    """Digest of the data config (what defines the features; no credentials are in it)."""
    from ..config import to_dict

    spec = {k: v for k, v in to_dict(data_cfg).items() if k not in _NOT_CONTENT}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]


def offline_features(data_cfg: DictConfig, cache: FeatureCache, reason: str) -> Optional[FeatureSet]:
    """The last cached features of this data config, for a run whose warehouse is unreachable."""
    found = None if data_cfg.get("refresh") else cache.last(config_digest(data_cfg))
    features = _cached(data_cfg, cache, found[0]) if found else None
    if features is None or found is None:
        return None
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(found[1])) if found[1] else "?"
    print(
        f"runner: warehouse unreachable ({reason[:200]}): proceeding from the feature cache, key "
        f"{features.key[:16]} pulled {stamp} (offline: data version not checked; data.refresh=true forces a pull)",
        flush=True,
    )
    features.offline = True
    return features


def embedded_digest(data_cfg: DictConfig) -> Optional[str]:
    """For the embedded warehouse: a digest of everything that decides the features.

    Its data is made by runner's seed script from the config, so the config, runner's
    version and the source of the code that seeds and builds the features decide the
    result: a warm run can skip starting the warehouse. None for other backends.
    """
    import importlib.util

    from .. import __version__

    if data_cfg.get("backend") != "embedded":
        return None
    modules = list(_FEATURE_CODE)
    target = (data_cfg.get("features") or {}).get("_target_")
    if target:
        modules.append(str(target).rsplit(".", 1)[0])
    h = hashlib.sha256(f"{config_digest(data_cfg)}|{__version__}".encode())
    h.update(files_version(local_files(data_cfg)).encode())  # data.files / data.inputs content
    for name in modules:
        try:
            spec = importlib.util.find_spec(name)
            h.update(Path(spec.origin).read_bytes() if spec and spec.origin else name.encode())
        except (ImportError, ValueError, OSError):
            return None
    return "embedded-" + h.hexdigest()[:32]


def embedded_features(data_cfg: DictConfig, cache: FeatureCache) -> Optional[FeatureSet]:
    """The cached features of an embedded-warehouse config, without starting the warehouse."""
    digest = None if data_cfg.get("refresh") else embedded_digest(data_cfg)
    found = cache.last(digest) if digest else None
    features = _cached(data_cfg, cache, found[0]) if found else None
    if features is not None:
        features.warehouse_started = False
    return features


def _cached(data_cfg: DictConfig, cache: FeatureCache, key: str) -> Optional[FeatureSet]:
    """The cache entry `key` as a FeatureSet (a hit), checked against the data config."""
    hit = cache.get(key)
    if hit is None:
        return None
    table, meta = hit
    check_frame(table, data_cfg)
    source = dict(meta.get("source") or {})
    return FeatureSet(
        table=table, key=key, cache_hit=True, sql=source.get("query", ""), source=source, path=str(cache.path(key))
    )
