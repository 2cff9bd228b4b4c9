"""runner/memory.py in a fresh interpreter each time: what it changes is process-wide."""

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import os, sys
    from runner.memory import map_large_blocks

    if sys.argv[1] == "fixed":
        map_large_blocks()
    page = os.sysconf("SC_PAGE_SIZE")

    def resident():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * page

    block = b"x" * (8 << 20)  # mapped (over 128 KiB); freeing it raises glibc's threshold
    del block
    before = resident()
    block = b"y" * (8 << 20)  # now from the heap, unless the threshold stays at 128 KiB
    del block
    print((resident() - before) >> 20)
    """
)


def _kept_mb(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_large_blocks_leave_the_process():
    assert _kept_mb("dynamic") >= 7  # glibc's own behaviour: the freed 8 MiB stays resident
    assert _kept_mb("fixed") <= 1
