"""Memory handed back to the OS: what keeps runner's peak RSS near what it holds.

glibc only; elsewhere (musl, macOS) both calls do nothing.
"""

from __future__ import annotations

import ctypes
from typing import Optional

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt() parameters, <malloc.h>
_MMAP_THRESHOLD = 128 * 1024  # glibc's default
_MMAP_THRESHOLD_MAX = 32 << 20  # the most glibc's dynamic threshold grows to (64-bit)
_mapped = False  # map_large_blocks() was called: the `runner` command's process


def give_back() -> None:
    """Return freed memory to the OS: Arrow's pool and glibc keep freed blocks for reuse, but
    what comes next (the split's numpy matrices, LightGBM's bins) allocates elsewhere, so a
    pull's buffers or a dropped table would stay in the process's peak."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def map_large_blocks() -> None:
    """Until reuse_large_blocks(): keep glibc's mmap threshold at its 128 KiB default, so
    every block of that size or more is mapped on its own and unmapped when freed. Left
    dynamic, glibc raises the threshold (up to 32 MiB) each time such a block is freed; the
    pull frees many, and afterwards the few-MB blocks of LightGBM's Dataset construction (its
    bin sample: one vector per feature growing by doubling, ~150 MB at 160,000 rows x 50)
    come from the heap, where the freed ones stay resident through training. A cold
    200,000 x 50 run peaked at 611 MB without this, 543 MB with it (warm: 569, 522); scoring
    800,000 rows, 986 MB and 797 MB. Called by the `runner` and `runner.score` commands only:
    a notebook importing runner keeps its own allocator settings."""
    global _mapped
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        _mapped = True


def reuse_large_blocks() -> None:
    """Once the training Dataset is built: if map_large_blocks() was called, blocks under
    32 MiB come from the heap again and stay there for reuse (the thresholds glibc's dynamic
    rule ends at). Boosting allocates and frees such blocks every round: mapped each time,
    a 5-trial sweep took 3x the page faults and ~15 % longer."""
    libc = _libc()
    if _mapped and libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD_MAX)


def _libc() -> Optional[ctypes.CDLL]:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (glibc has both)
    except (OSError, AttributeError):
        return None
    return libc
