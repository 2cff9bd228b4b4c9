"""runner's commands: `runner` / `python -m runner` (cli, the Hydra app, help),
`python -m runner.init`, `python -m runner.rerun` and `python -m runner.score`. The public
module names stay thin entry modules (runner/__main__.py, runner/init.py, runner/rerun.py,
runner/score/__main__.py) that call main() here."""
