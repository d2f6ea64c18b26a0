"""Optional dependencies (sine_jax/errors.py): a missing one is one line naming its extra."""

import sys

import numpy as np
import pytest

from sine_jax import analysis
from sine_jax.errors import SineError, import_optional


def test_a_missing_optional_dependency_names_the_extra_that_installs_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "sklearn.metrics", raising=False)
    with pytest.raises(SineError, match=r"^sklearn is not installed: .*'analysis' extra, "
                                        r"pip install -e '\.\[analysis\]'$"):
        analysis.category_nmi(np.array([0, 1, 1]), np.array([0, 1, 1]))


def test_an_installed_optional_dependency_is_the_module():
    assert import_optional("numpy.linalg", "analysis") is np.linalg
