"""The `runner` command (and `python -m runner`): fast --help, the Hydra app, a quick exit."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Union


def main() -> None:
    """Entry point of the `runner` console script and of `python -m runner`."""
    if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
        from .help import text

        print(text(), end="")
        _exit(0)
    # `python -m runner` puts the current folder on sys.path; the console script does the
    # same, so feature code of the user's project (data.features._target_=my_pkg.fn) imports.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    from ..allocator import map_large_blocks

    map_large_blocks()
    from ..interrupts import INTERRUPTS
    from .app import main as app_main

    INTERRUPTS.install()
    try:
        app_main()
    except SystemExit as exc:
        _exit(exc.code)
    except KeyboardInterrupt as exc:
        _exit(_interrupted(exc))
    _exit(0)


def _interrupted(exc: KeyboardInterrupt) -> int:
    """One line saying what was kept and how to go on; the exit code 128 + the signal."""
    import shlex

    from ..interrupts import INTERRUPTS, as_interrupted

    stop = as_interrupted(exc)
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        import traceback

        traceback.print_exception(exc)
    again = shlex.join(["python", "-m", "runner", *sys.argv[1:]])
    kept = INTERRUPTS.kept or "nothing was recorded yet"
    print(
        f"runner: interrupted by {stop.name}: {kept}; to go on, run the same command again: {again}",
        file=sys.stderr,
        flush=True,
    )
    return stop.exit_code


def _exit(code: Union[str, int, None]) -> None:
    """Exit as the interpreter would, minus tearing down every module and object: that
    took ~1.2 s after a sweep (mlflow, optuna, snowpark, lightgbm loaded). Exit handlers
    run first, so files, logs and runs are closed. With other non-daemon threads alive
    (a launcher's executor: they stop in the interpreter's own shutdown) it exits normally."""
    if any(t is not threading.current_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
