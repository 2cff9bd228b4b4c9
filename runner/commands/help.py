"""`python -m runner --help` without composing the config.

Hydra's own --help deep-copies the whole ConfigStore once per config group
(~2.4 s of CPU here); this lists the same groups from conf/ in a few ms.
"""

from __future__ import annotations

from pathlib import Path

CONF = Path(__file__).resolve().parent.parent / "conf"  # runner/conf: see app.conf_dir

USAGE = """\
runner: warehouse features -> LightGBM -> MLflow, from declarative Hydra config.

usage: runner [--multirun] [--config-dir DIR] [override ...]   (or python -m runner ...)

Config groups (choose with group=option):
{groups}

Examples:
  python -m runner                                   # embedded demo warehouse, local MLflow store
  python -m runner model.params.num_leaves=63 data.refresh=true
  python -m runner tracker=server tracker.uri=http://127.0.0.1:5000
  python -m runner --multirun sweep=lightgbm hydra.sweeper.n_trials=20
  python -m runner --multirun model.params.num_leaves=15,31,63
  python -m runner.rerun RUN_ID                      # run a logged run (or a sweep trial) again
  python -m runner.score models:/NAME/VERSION        # score the features into a warehouse table
  python -m runner.init [DIR]                        # a starter conf/ for your project

More:
  python -m runner --cfg job          the composed config (add overrides to see their effect)
  python -m runner --info defaults    where each config comes from
  python -m runner --hydra-help       Hydra's flags (--config-dir, --multirun, -cn, ...)
"""


def text() -> str:
    lines = []
    for group in sorted(p for p in CONF.iterdir() if p.is_dir()):
        options = sorted(f.stem for f in group.glob("*.yaml"))
        lines.append(f"  {group.name}: {', '.join(options)}")
    return USAGE.format(groups="\n".join(lines))
