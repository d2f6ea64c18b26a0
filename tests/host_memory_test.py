"""Freed large blocks stay in the heap: re-allocating them no longer page-faults."""

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys
import numpy as np
from sine_jax import host_memory
if sys.argv[1] == "tuned":
    assert host_memory.keep_freed_memory_in_heap()
for _ in range(2):  # warm up
    np.ones(64 << 20, np.uint8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    np.ones(64 << 20, np.uint8)  # 64 MiB (above glibc's dynamic mmap limit), touched, freed
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tuned_allocator_stops_page_faults_of_reused_buffers():
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True,
                             text=True, check=True)
        return int(out.stdout.strip())

    default, tuned = faults("default"), faults("tuned")
    assert default > 2_000  # each 64 MiB buffer is mapped afresh (huge pages: ~500 faults)
    assert tuned < default / 10
