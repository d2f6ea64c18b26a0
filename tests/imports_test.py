"""The layout's promises: the package has no import circle, every module imports in a fresh
interpreter, and every launch/ tool runs by path (`python launch/x.py --help`)."""

import ast
import glob
import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "sine_jax"


def _modules() -> dict[str, str]:
    """Dotted module name -> file, for every module of the package (packages by __init__)."""
    modules = {}
    for path in glob.glob(os.path.join(REPO, PACKAGE, "**", "*.py"), recursive=True):
        parts = os.path.relpath(path, REPO)[: -len(".py")].split(os.sep)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imports(path: str, modules: dict[str, str]) -> set[str]:
    """The package's modules that the file imports, at module level or inside functions:
    `from a.b import c` counts as a.b.c when that is a module, else as a.b."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                     else node.module for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (module -> the modules it imports), or None."""
    state = {}  # module -> "open" while on the DFS path, "done" after

    def visit(module, path):
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                return path[path.index(imported):] + [imported]
            if imported not in state:
                cycle = visit(imported, path + [imported])
                if cycle:
                    return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [module])
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_package_has_no_import_circle():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    assert {"sine_jax.models.sine", "sine_jax.step", "sine_jax.experiments.sweep"} <= set(graph)
    assert "sine_jax.models.layers" in graph["sine_jax.models.sine"]
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(_modules())
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_configs_resolve_and_compare_without_loading_jax():
    """The sweep, the recorded configs and their comparison stay light: SINE's presets
    resolve (sine_options) without JAX or Flax."""
    code = (
        "import sys\n"
        "from configs import synthetic\n"
        "from sine_jax import run_config\n"
        "from sine_jax.experiments import sweep\n"
        "config = synthetic.get_config().to_dict()\n"
        "recorded = run_config.with_resolved_switches(config)\n"
        "assert recorded['model']['logit_scale'] is not None\n"
        "assert run_config.differing_fields(recorded, config) == []\n"
        "print(sorted(m for m in ('jax', 'flax') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"


def _needs(*packages):
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")


# recbole_step.py runs in RecBole's own venv (torch, recbole): here only where those exist.
SCRIPTS = [pytest.param(name, marks=_needs("torch", "recbole"))
           if name == "recbole_step.py" else name
           for name in sorted(os.listdir(os.path.join(REPO, "launch"))) if name.endswith(".py")]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_launch_tool_runs_by_path(script):
    path = os.path.join("launch", script)
    proc = subprocess.run([sys.executable, path, "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(REPO, path)) as f:
        first_line = ast.get_docstring(ast.parse(f.read())).splitlines()[0]
    assert first_line in proc.stdout
