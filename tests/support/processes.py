"""Processes started by tests as a user starts them."""

from __future__ import annotations

import signal


def sigint_default() -> None:
    """Popen's preexec_fn: SIGINT at its default, as in a process started from a terminal.

    A child inherits an ignored SIGINT (pytest started in the background of a non-interactive
    shell, e.g. `pytest &` in a script, ignores it), and Python then installs no
    KeyboardInterrupt handler; start_new_session alone does not change that.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
