"""Test set-up: 8 fake CPU devices before JAX starts; flags parsed for grain/absl; one
compilation cache for the whole suite."""
import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
# Many tests train the same tiny model (in process, in the CLI subprocesses they start, on
# every xdist worker): a persistent cache shared by all of them compiles each program once.
# Entries are keyed by the program, the devices and the JAX version, so a stale entry is
# never used; an unreadable one (a process killed while writing it) is recompiled with a
# warning. Programs that compile in under a second are not cached (JAX's default).
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "sine_jax_tests_jax_cache")
)

import jax  # noqa: E402
import pytest  # noqa: E402
from absl import flags  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
# A pytest plugin may have imported JAX before the variables above were set.
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
flags.FLAGS.mark_as_parsed()

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared")
SHARED_DATA = os.path.normpath(os.path.join(SHARED, "data"))


# CI sets it: a test whose ../shared/data file is absent fails instead of skipping.
REQUIRE_SHARED_DATA = os.environ.get("SINE_JAX_REQUIRE_SHARED_DATA") == "1"


@pytest.fixture
def flip_a_bit_of_array_data():
    """A function flipping one bit in the middle of the largest array-data file of a
    checkpoint's step directory (a pathlib.Path), as a disk fault would."""
    def flip(step_dir):
        data_files = [p for p in (step_dir / "state").rglob("*")
                      if p.is_file() and p.parent.name == "d"]
        target = max(data_files, key=lambda p: p.stat().st_size)
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x40
        target.write_bytes(bytes(data))

    return flip


@pytest.fixture
def shared_file():
    """shared_file(relpath) -> the path of ../shared/data/relpath; skips the test when that
    file is absent (with SINE_JAX_REQUIRE_SHARED_DATA=1, fails it)."""

    def path(relpath: str) -> str:
        full = os.path.join(SHARED_DATA, relpath)
        if not os.path.exists(full):
            message = f"{full} is not present"
            if REQUIRE_SHARED_DATA:
                pytest.fail(f"{message} (SINE_JAX_REQUIRE_SHARED_DATA=1)")
            pytest.skip(message)
        return full

    return path


# The heaviest test files (about 390, 340, 320, 170, 170 and 100 CPU seconds on the 2-core
# machine), run first: pytest-xdist hands out whole files in collection order, so a heavy
# file collected last would run alone at the end while the other workers sit idle.
HEAVY_FIRST = ("train_test.py", "models_test.py", "robustness_test.py", "step_test.py",
               "multiprocess_test.py", "serving_test.py")


def pytest_collection_modifyitems(items):
    """Heavy files first (HEAVY_FIRST's order); the order within a file is unchanged."""
    def rank(item):
        name = item.path.name
        return HEAVY_FIRST.index(name) if name in HEAVY_FIRST else len(HEAVY_FIRST)

    items.sort(key=rank)
