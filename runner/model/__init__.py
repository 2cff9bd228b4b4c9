"""Model: the feature table as LightGBM inputs (and raw rows as them: rows.py, shared with the
logged model, pyfunc_code.py), and training with scores per objective."""

from .labels import encode_label
from .metrics import OBJECTIVES, headline, score
from .prepare import Prepared, encode_features, prepare
from .rows import decode_frame, encode_frame, kind_of
from .train import BINNING_PARAMS, TrainResult, datasets, lgb_params, train

__all__ = [
    "BINNING_PARAMS",
    "OBJECTIVES",
    "Prepared",
    "TrainResult",
    "datasets",
    "decode_frame",
    "encode_frame",
    "encode_features",
    "encode_label",
    "headline",
    "kind_of",
    "lgb_params",
    "prepare",
    "score",
    "train",
]
