"""Batch scoring in the warehouse: `python -m runner.score MODEL_URI [override ...]`.

The data config's feature definition is computed in the warehouse with the code training
uses (no label needed), scored with the model (an MLflow model URI of the tracking store),
and written back to a warehouse table (score.table) keyed by entity and model URI; one MLflow
run records it, with the predictions as an artifact. See docs/scoring.md.

    from runner.score import score
    result = score("models:/churn/3", ["data=snowflake", "data.connection_name=prod"])
    result.run_id, result.rows, result.table
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

from .job import ScoreResult, check_settings, score_config


def score(
    model_uri: str,
    overrides: Optional[Sequence[str]] = None,
    *,
    config_dir: Optional[str] = None,
    config_name: str = "config",
    session: Any = None,
) -> ScoreResult:
    """Compose the config as `runner` does (runner's conf/, plus config_dir as --config-dir)
    and score; errors raise runner.RunnerError subclasses (the CLI prints them as one line).
    session: a Snowpark session of your own (data.backend must be snowflake), left open."""
    from hydra import compose

    from ..api import _hydra
    from ..console import quiet_libraries
    from ..data.warehouse import GIVEN
    from ..errors import ConfigError, RunnerError, first_line
    from ..secrets import install_log_filter

    given = list(overrides or [])
    install_log_filter()
    quiet_libraries()
    with _hydra(config_dir), GIVEN.use(session):
        try:
            cfg = compose(config_name=config_name, overrides=given)
        except RunnerError:
            raise
        except Exception as exc:  # Hydra's own composition errors
            raise ConfigError(f"overrides {given}: {first_line(exc)}") from None
        return score_config(cfg, model_uri, given)


__all__: List[str] = ["ScoreResult", "check_settings", "score", "score_config"]
