"""Hydra sweeper plugin: an Optuna study whose trials are nested MLflow runs.

Hydra imports this module at every app start (plugin discovery), so it imports
nothing heavy: optuna, mlflow and lightgbm load in ._impl when a sweep starts.
"""

from typing import Any, List, Optional

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from .config import RunnerOptunaSweeperConf  # noqa: F401  (registers the configs)


class RunnerOptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self._impl: Optional[Any] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from ._impl import RunnerOptunaSweeperImpl

        self.hydra_context = hydra_context
        self.config = config
        self._impl = RunnerOptunaSweeperImpl(self.settings)
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.launcher = self._impl.launcher

    def sweep(self, arguments: List[str]) -> Any:
        assert self._impl is not None, "setup() first"
        return self._impl.sweep(arguments)
