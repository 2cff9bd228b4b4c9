"""The per-process feature memo: one pull and one split per data config per process.

A sweep's trials (threads, or jobs of one launcher process) all read the same data:
the first job pulls (or a background prefetch does, while the sweep sets up) and the
rest reuse it. The first thread to ask owns the Prepared split's LightGBM Datasets;
every other thread gets a view without them, so Datasets are never shared by
concurrent lgb.train calls.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
from typing import Any, Dict, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

from ..data import (
    FeatureCache,
    FeatureSet,
    embedded_features,
    load_features,
    offline_features,
    open_warehouse,
    validate,
)
from ..data.files import stat_signature
from ..errors import WarehouseError

log = logging.getLogger(__name__)

# Connector messages of a warehouse that cannot be reached at all (network, host down).
_UNREACHABLE_WH = re.compile(
    r"Could not connect to Snowflake backend|Connection refused|Failed to establish|"
    r"Max retries exceeded|Name or service not known|timed out",
    re.IGNORECASE,
)


@dataclasses.dataclass
class _Entry:
    features: FeatureSet
    prepared: Any  # runner.model.Prepared
    # True once a job has reported the pull (its queries, its time): later jobs report a reuse.
    claimed: bool


def data_digest(cfg: DictConfig) -> str:
    return json.dumps(
        {
            "data": OmegaConf.to_container(cfg.data, resolve=True),
            "objective": cfg.model.params.objective,
            "positive_class": cfg.model.get("positive_class"),
            "files": stat_signature(cfg.data),  # a file edited since the last pull: pulled again
        },
        sort_keys=True,
        default=str,
    )


class FeatureMemo:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self.reset()

    def reset(self) -> None:
        """Forget every pull and prefetch error (tests; a new process starts empty)."""
        with self._lock:
            self._entries: Dict[str, _Entry] = {}  # one entry per process is typical
            self._errors: Dict[str, BaseException] = {}  # a prefetch's, raised by the job needing it
        self._local = threading.local()

    @property
    def errors(self) -> Dict[str, BaseException]:
        return self._errors

    def prepared_data(self, cfg: DictConfig, query_tag: Optional[str] = None) -> Tuple[FeatureSet, Any]:
        """FeatureSet and Prepared split for cfg.data, pulled at most once per process."""
        with self._lock:
            features, prepared = self._get(cfg, query_tag)
            if prepared.owner is None:
                prepared.owner = threading.get_ident()
        views = self._local.__dict__.setdefault("views", {})
        view = views.get(id(prepared))
        if view is None or view[0] is not prepared:
            mine = prepared.owner == threading.get_ident()
            view = (prepared, prepared if mine else dataclasses.replace(prepared, datasets={}))
            views.clear()
            views[id(prepared)] = view
        return features, view[1]

    def prefetch(self, cfg: DictConfig, query_tag: Optional[str] = None) -> threading.Thread:
        """Pull and prepare cfg's features, and build their LightGBM Datasets, in a background
        thread while the caller sets up (a sweep: study, tracking store, parent run). The first
        job that asks for the same data waits for it and reports the pull as its own; an error
        is raised by that job, as if it had pulled itself."""

        def work() -> None:
            from ..model import datasets, lgb_params

            with self._lock:
                try:
                    _, prepared = self._get(cfg, query_tag, claim=False)
                except BaseException as exc:  # noqa: BLE001 - handed to the job that needs the data
                    self._errors[data_digest(cfg)] = exc
                    return
                try:
                    datasets(prepared, lgb_params(cfg.model, prepared))
                except Exception as exc:  # the job builds them itself and reports the problem
                    log.debug("prefetch: Datasets not built: %s", exc)

        thread = threading.Thread(target=work, name="runner-prefetch", daemon=True)
        thread.start()
        return thread

    def reads_in_batches(self, cfg: DictConfig) -> bool:
        """Whether cfg's data, pulled in this process (a prefetch still at work is waited
        for), trains from its rows read in batches: a table too large to keep in memory."""
        with self._lock:
            entry = self._entries.get(data_digest(cfg))
        return entry is not None and entry.prepared.in_batches

    def unclaimed_queries(self) -> int:
        """Feature queries of pulls that a prefetch made and no job reported (a sweep worker
        whose trials all went to other workers); waits for a prefetch still pulling."""
        with self._lock:
            return sum(e.features.feature_queries for e in self._entries.values() if not e.claimed)

    def _get(self, cfg: DictConfig, query_tag: Optional[str], claim: bool = True) -> Tuple[FeatureSet, Any]:
        from ..model import prepare

        digest = data_digest(cfg)
        if digest in self._errors:
            raise self._errors.pop(digest)
        entry = self._entries.get(digest)
        if entry is not None and not entry.claimed:  # pulled by a prefetch: this job reports it
            entry.claimed = claim
            return entry.features, entry.prepared
        if entry is not None and not cfg.data.refresh:
            reused = dataclasses.replace(entry.features, cache_hit=True, query_ids=[], feature_queries=0, seconds=0.0)
            return reused, entry.prepared
        features = pull(cfg.data, query_tag)
        prepared = prepare(features.take_table(), cfg.data, cfg.model.params.objective, cfg.model.get("positive_class"))
        self._entries.clear()
        self._entries[digest] = _Entry(features, prepared, claim)
        return features, prepared


def pull(data_cfg: DictConfig, query_tag: Optional[str]) -> FeatureSet:
    """The features of data_cfg: from the cache, else the warehouse, else (unreachable) the
    last cached pull of the same data config."""
    validate(data_cfg)
    cache = FeatureCache(data_cfg.cache_dir)
    try:
        features = embedded_features(data_cfg, cache)
        if features is None:
            with open_warehouse(data_cfg) as wh:
                features = load_features(wh, data_cfg, cache, query_tag=query_tag)
        return features
    except WarehouseError as exc:
        # Unreachable (not refused, not a bad query): the last cached pull of this data config.
        offline = offline_features(data_cfg, cache, str(exc)) if _UNREACHABLE_WH.search(str(exc)) else None
        if offline is None:
            raise
        return offline


MEMO = FeatureMemo()
prepared_data = MEMO.prepared_data
prefetch = MEMO.prefetch
