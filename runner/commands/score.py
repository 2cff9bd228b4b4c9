"""`python -m runner.score MODEL_URI [--config-dir DIR] [override ...]`: batch scoring in the
warehouse as one MLflow run (docs/scoring.md). Exit 0, 2 on runner's own errors (one
`runner: error:` line), 130 / 143 when stopped by Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import TYPE_CHECKING, List, Optional

if TYPE_CHECKING:
    from ..score import ScoreResult


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_intermixed_args(argv)  # --config-dir before or after the overrides
    # As `python -m runner`: feature code of the user's project (data.features._target_) imports.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    from ..allocator import map_large_blocks

    map_large_blocks()  # no training here: nothing to reuse_large_blocks() for
    from ..console import exit_with
    from ..errors import RunnerError
    from ..interrupts import INTERRUPTS, as_interrupted
    from ..score import score

    INTERRUPTS.install()
    try:
        result = score(args.model_uri, args.overrides, config_dir=args.config_dir, config_name=args.config_name)
    except RunnerError as exc:
        exit_with(exc)
    except KeyboardInterrupt as exc:
        stop = as_interrupted(exc)
        again = shlex.join(["python", "-m", "runner.score", *(sys.argv[1:] if argv is None else argv)])
        kept = INTERRUPTS.kept or "nothing was recorded yet"
        print(f"runner: interrupted by {stop.name}: {kept}; to score again: {again}", file=sys.stderr, flush=True)
        return stop.exit_code
    _report(result)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runner.score",
        description="Score the data config's entities in the warehouse with an MLflow model and "
        "write the predictions to a warehouse table (score.table), as one MLflow run.",
    )
    parser.add_argument(
        "model_uri",
        metavar="MODEL_URI",
        help="runs:/<run_id>/model, models:/<name>/<version>, models:/<name>@<alias>, models:/<model_id>",
    )
    parser.add_argument("overrides", nargs="*", metavar="override", help="Hydra overrides, as for `runner`")
    parser.add_argument("--config-dir", default=None, help="a folder of your own configs (as runner --config-dir)")
    parser.add_argument("--config-name", default="config", help="the primary config in it (default: config)")
    return parser


def _report(result: ScoreResult) -> None:
    replaced = f", replacing {result.replaced} rows of an earlier scoring" if result.replaced else ""
    lines = [
        f"runner: scoring run {result.run_id} {result.status} in {result.seconds:.1f}s",
        f"  model: {result.model_uri}",
        f"  scored {result.rows} entities -> {result.table}{replaced}",
        f"  predictions also kept as the run's artifact {result.artifact}",
    ]
    if result.embedded:
        lines.append("  (the embedded warehouse ends with this process: its table is gone, the artifact stays)")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
