"""Checks command lines of the docs without running them: `python tests/doc_commands.py`
reads a JSON list of {"tool", "argv"} on stdin (tool: "sine_jax.main",
"sine_jax.data.fetch" or "launch/NAME.py") and writes, for each, {"error": the one line the
tool would print for these arguments, or null; "data_path": the config's data.path, or
null}.

Each argv is parsed by the tool's own flags, as the tool parses it: absl flags, the --config
file with its --config.FIELD=VALUE overrides (ml_collections defines those from the command
line, so a global-flag tool is loaded afresh for each argv and its flags removed after), and
for `sine_jax.main` the mode's usage rules. A launch tool's `--config` with `--set` overrides
is resolved as the tool resolves it (`sweep.config_from_args`). Runs in its own process: it
loads the tools' global flags.
"""

import importlib
import importlib.util
import json
import os
import sys

from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


SCHEMA = "configs/default.py"
RECORDED = "configs/recorded.py:"


def _schema_for_recorded(argv: list[str]) -> list[str]:
    """A run's recorded config (--config=configs/recorded.py:WORKDIR, a workdir the docs'
    earlier commands make) checked as the schema: its overrides must be fields of it."""
    return [f"--config={SCHEMA}" if a.startswith(f"--config={RECORDED}") else a for a in argv]


def _load_script(path: str):
    spec = importlib.util.spec_from_file_location(f"doc_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_global_tool(tool: str, argv: list[str], builtin: set[str]) -> dict:
    """A tool whose flags are absl's global FLAGS (sine_jax.main, the run_app launch tools)."""
    from sine_jax import cli, run_config
    from sine_jax import main as main_module
    from sine_jax.errors import SineError

    argv = [tool, *_schema_for_recorded(argv)]
    recorded = tool == "sine_jax.main" and run_config.with_recorded_config(
        argv, main_module.RECORDED_CONFIG_MODES) != argv
    if recorded:  # the workdir's config.json: check the overrides against the schema
        argv = [argv[0], f"--config={SCHEMA}", *argv[1:]]
    recorded = recorded or argv[1:] != _schema_for_recorded(argv[1:])
    sys.argv = argv
    try:
        if tool == "sine_jax.main":
            module = importlib.reload(main_module)
        else:
            module = _load_script(os.path.join(REPO, tool))
        rest = flags.FLAGS(argv)
        if len(rest) > 1:
            raise SineError(f"unexpected arguments: {' '.join(rest[1:])}")
        if tool == "sine_jax.main":
            module.check_usage()
        config = flags.FLAGS["config"].value if "config" in flags.FLAGS else None
        data_path = None if recorded or config is None else config.data.path
        return {"error": None, "data_path": data_path}
    except Exception as e:  # noqa: BLE001 - what the tool would report, in one line
        return {"error": str(e) if isinstance(e, SineError) else cli.flag_error_message(
            e, argv), "data_path": None}
    finally:
        for name in set(flags.FLAGS) - builtin:
            delattr(flags.FLAGS, name)
        flags.FLAGS.unparse_flags()


def _check_flag_tool(tool: str, argv: list[str]) -> dict:
    """A tool that parses its flags per call (`cli.parse_flags`): fetch and most launch
    tools; their --config with --set overrides resolved as the tools do."""
    from sine_jax import cli
    from sine_jax.errors import SineError
    from sine_jax.experiments import sweep

    if tool == "sine_jax.data.fetch":
        from sine_jax.data import fetch as module

        define, doc, positional = module.define_flags, module.__doc__, "name"
    else:
        module = _load_script(os.path.join(REPO, tool))
        define, doc, positional = module.define_flags, module.__doc__, None
    try:
        args = cli.parse_flags(define, _schema_for_recorded(argv), doc, positional=positional)
        if tool == "sine_jax.data.fetch" and args.name and args.name not in module.SOURCES:
            raise SineError(f"unknown dataset {args.name!r}")
        config_spec = getattr(args, "config", None)
        if not isinstance(config_spec, str):
            return {"error": None, "data_path": None}
        sets = dict(s.split("=", 1) for s in getattr(args, "set", None) or [])
        config = sweep.config_from_args(config_spec, sets)
        for grid in getattr(args, "grid", None) or []:
            sweep.check_field(config, grid.split("=", 1)[0])
        recorded = argv != _schema_for_recorded(argv)
        return {"error": None, "data_path": None if recorded else config.data.path}
    except (SineError, ValueError) as e:
        return {"error": str(e), "data_path": None}


def main() -> None:
    os.chdir(REPO)
    sys.path.insert(0, REPO)
    from absl import app, logging  # noqa: F401 - absl's own flags, kept between checks

    builtin = set(flags.FLAGS)
    sys.argv = sys.argv[:1]
    from sine_jax import main as main_module  # its flags are removed, then loaded per check

    for name in set(flags.FLAGS) - builtin:
        delattr(flags.FLAGS, name)
    global_tools = {main_module.__name__, "launch/benchmark.py",
                    "launch/measure_preprocessing.py", "launch/serving_benchmark.py"}
    results = []
    for command in json.load(sys.stdin):
        tool, argv = command["tool"], command["argv"]
        if tool in global_tools:
            results.append(_check_global_tool(tool, argv, builtin))
        else:
            results.append(_check_flag_tool(tool, argv))
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
