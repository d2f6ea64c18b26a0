"""Test set-up: 8 fake CPU devices before JAX starts; flags parsed for grain/absl."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")

import jax  # noqa: E402
import pytest  # noqa: E402
from absl import flags  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
flags.FLAGS.mark_as_parsed()

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared")
SHARED_DATA = os.path.normpath(os.path.join(SHARED, "data"))


@pytest.fixture
def shared_data():
    """Path to ../shared/data; skips the test when it is absent."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


# The heaviest test files (about 390, 340, 320, 170 and 100 CPU seconds on the 2-core
# machine), run first: pytest-xdist hands out whole files in collection order, so a heavy
# file collected last would run alone at the end while the other workers sit idle.
HEAVY_FIRST = ("train_test.py", "models_test.py", "robustness_test.py", "step_test.py",
               "serving_test.py")


def pytest_collection_modifyitems(items):
    """Heavy files first (HEAVY_FIRST's order); the order within a file is unchanged."""
    def rank(item):
        name = item.path.name
        return HEAVY_FIRST.index(name) if name in HEAVY_FIRST else len(HEAVY_FIRST)

    items.sort(key=rank)
