"""glibc allocator settings for XLA:CPU training loops.

XLA:CPU allocates and frees its step buffers (activations, gradients) on every step. By
default glibc serves blocks above 128 KiB with mmap and gives them back with munmap, and
trims the heap top, so every step page-faults its buffers in again: on a 2-core machine a
SINE step at batch 128 spent a third of its time in the kernel (1.1M minor faults in 100
steps). Keeping such blocks in the heap removed most faults and made the step about 1.5x
faster (see docs/results-4epochs.md, "Training throughput"). XLA's worker threads allocate too, and glibc gives each
thread an arena of 64 MiB heaps that serves larger blocks with mmap whatever the threshold:
one arena for all threads removed most of the remaining faults (1.67M -> 0.31M in 32 steps
at batch 1024) and made that step 1.3x faster (docs/benchmarks.md). Nothing changes where
there is no glibc.
"""

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_THRESHOLD_BYTES = 1 << 30


def keep_freed_memory_in_heap() -> bool:
    """Raises glibc's mmap and trim thresholds to 1 GiB and keeps one arena for every thread
    (call before any other thread starts); returns True when applied."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, _THRESHOLD_BYTES)
        and mallopt(_M_TRIM_THRESHOLD, _THRESHOLD_BYTES)
        and mallopt(_M_ARENA_MAX, 1)
    )
