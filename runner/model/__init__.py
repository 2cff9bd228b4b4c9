"""Model: the feature table as LightGBM inputs, and training with scores per objective."""

from .metrics import OBJECTIVES, headline, score
from .prepare import Prepared, encode_features, encode_label, prepare
from .train import BINNING_PARAMS, TrainResult, datasets, lgb_params, train

__all__ = [
    "BINNING_PARAMS",
    "OBJECTIVES",
    "Prepared",
    "TrainResult",
    "datasets",
    "encode_features",
    "encode_label",
    "headline",
    "lgb_params",
    "prepare",
    "score",
    "train",
]
