"""Freed large blocks stay in the heap: re-allocating them no longer page-faults."""

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys, threading
import numpy as np
from sine_jax import host_memory
if sys.argv[1] == "tuned":
    assert host_memory.keep_freed_memory_in_heap()

def step():  # a step's buffers: 3 x 30 MiB alive at once (more than a 64 MiB thread heap)
    buffers = [np.ones(30 << 20, np.uint8) for _ in range(3)]
    del buffers

def allocate():
    for _ in range(2):  # warm up
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

if sys.argv[2] == "thread":  # XLA's worker threads allocate too
    thread = threading.Thread(target=allocate)
    thread.start()
    thread.join()
else:
    allocate()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
@pytest.mark.parametrize("where", ["main", "thread"])
def test_tuned_allocator_stops_page_faults_of_reused_buffers(where):
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", SCRIPT, mode, where], capture_output=True,
                             text=True, check=True)
        return int(out.stdout.strip())

    default, tuned = faults("default"), faults("tuned")
    # Mapped afresh, each of the 10 x 3 buffers faults at least once, whatever the page size
    # (4 KiB, or 2 MiB transparent huge pages) and however many pages fault together.
    assert default >= 30
    assert tuned <= default / 10
