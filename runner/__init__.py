"""runner: declarative experiments from warehouse features to MLflow."""

__version__ = "0.1.0"
