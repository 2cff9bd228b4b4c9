"""Tracking: one MLflow store per run or sweep, reached through MlflowClient with explicit
run ids, outages ridden out, SageMaker signing through its plugin, datasets as inputs."""

from .dataset import dataset_digest
from .lifecycle import Run
from .outage import REACHED, Outage
from .tracker import Tracker
from .uri import KINDS, tracking_uri
from .values import flatten

__all__ = ["KINDS", "REACHED", "Outage", "Run", "Tracker", "dataset_digest", "flatten", "tracking_uri"]
