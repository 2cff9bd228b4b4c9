import sys

if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
    from .cli_help import text

    print(text(), end="")
    sys.exit(0)

import atexit  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402

from .app import main  # noqa: E402


def _exit(code) -> None:
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


try:
    main()
except SystemExit as exc:
    _exit(exc.code)
_exit(0)
