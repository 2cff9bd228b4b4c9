"""runner/allocator.py in a fresh interpreter each time: what it changes is process-wide."""

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit

PROBE = textwrap.dedent(
    """
    import os, sys
    from runner.allocator import map_large_blocks, reuse_large_blocks

    if sys.argv[1] in ("mapped", "reused"):
        map_large_blocks()
    if sys.argv[1] == "reused":
        reuse_large_blocks()
    page = os.sysconf("SC_PAGE_SIZE")

    def resident():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * page

    before = resident()
    block = b"x" * (8 << 20)  # over 128 KiB: mapped, unless reused; freed, glibc's threshold rises
    del block
    block = b"y" * (8 << 20)  # from the heap now (or mapped again), left there when freed
    del block
    print((resident() - before) >> 20)
    """
)


def _kept_mb(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_large_blocks_leave_the_process_until_the_dataset_is_built():
    assert _kept_mb("dynamic") >= 7  # glibc's own behaviour: the freed 8 MiB stays resident
    assert _kept_mb("mapped") <= 1  # the pull and the Dataset construction: unmapped when freed
    assert _kept_mb("reused") >= 7  # boosting rounds: kept in the heap for the next round
