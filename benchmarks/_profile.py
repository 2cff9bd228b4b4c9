"""`python benchmarks/_profile.py OUT.pstats (-m MODULE | SCRIPT) [args...]`: cProfile of every
thread of a process (runner's trials run in worker threads, its feature pull in another),
written at exit by an atexit handler: runner ends with os._exit after running the exit
handlers, so `python -m cProfile -o` would never write its file. bench.py --profile uses it.
Read call counts from it: the profiler's overhead distorts the timings.
"""

from __future__ import annotations

import atexit
import cProfile
import pstats
import runpy
import sys
import threading
from typing import List


def main() -> None:
    out, rest = sys.argv[1], sys.argv[2:]
    profilers: List[cProfile.Profile] = []

    def per_thread(*_args) -> None:  # the first profile event of each new thread
        prof = cProfile.Profile()
        profilers.append(prof)
        prof.enable()

    def dump() -> None:
        main_prof.disable()
        stats = pstats.Stats(main_prof)
        for prof in profilers:
            try:
                stats.add(prof)
            except (TypeError, ValueError):  # a thread that recorded nothing
                pass
        stats.dump_stats(out)

    atexit.register(dump)
    threading.setprofile(per_thread)
    main_prof = cProfile.Profile()
    if rest[0] == "-m":
        sys.argv = [rest[1], *rest[2:]]
        sys.path[0] = ""  # as `python -m` does
        main_prof.enable()
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = rest
        main_prof.enable()
        runpy.run_path(rest[0], run_name="__main__")


if __name__ == "__main__":
    main()
