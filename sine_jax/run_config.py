"""The config a workdir was started with, and the check that a rerun uses the same one.

`WORKDIR/config.json` is written when a run starts. Rerunning on the same workdir resumes,
so the config must match it except for fields that only change the run's length or its
bookkeeping (RESUMABLE_FIELDS), the export's settings (`serving.*`) and the device mesh
(`mesh.*`); anything else is refused with the differing fields named, unless the user
passes `--allow_config_change`.
"""

import importlib.util
import json
import os
import sys
from typing import Any

from ml_collections import config_dict

from sine_jax.errors import ConfigError, SineError
from sine_jax.workdir import write_json_atomic

CONFIG_FILE = "config.json"
RESUMABLE_FIELDS = (
    "train.num_epochs",
    "train.patience",
    "train.log_every_steps",
    "eval.batch_size",
    "eval.item_chunk_size",
    "data.cache_dir",
    "checkpoint.keep",
)
# serving.*: read by --mode=export only; mesh.*: checkpoints restore onto any mesh shape and
# the global batches do not depend on it.
RESUMABLE_PREFIXES = ("serving.", "mesh.")


def load_config_file(spec: str) -> config_dict.ConfigDict:
    """The ConfigDict of 'path/to/config.py[:ARG]' (its get_config(), or get_config(ARG)).

    Raises:
        ConfigError: one line naming the file: it does not exist, or loading it or its
            get_config failed (the exception's type and message).
    """
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"--config={spec}: no such file {path}")
    if os.getcwd() not in sys.path:  # configs import `configs.default`, as under `python -m`
        sys.path.insert(0, os.getcwd())
    module_spec = importlib.util.spec_from_file_location("checked_config", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
        return module.get_config(arg) if arg else module.get_config()
    except Exception as e:  # any failure of the user's config file, in one line
        raise ConfigError(f"--config={spec}: {type(e).__name__}: {e}") from e


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; tuples become lists (as after a JSON round trip)."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


def differing_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Fields (dotted names) whose values differ, run-length and export fields excepted.

    A field that a newer version added as an unset switch (None: keep the old behaviour) is
    not a difference from a config recorded before it existed.
    """
    old_flat, new_flat = flatten(old), flatten(new)
    names = sorted(set(old_flat) | set(new_flat))
    return [
        n for n in names
        if n not in RESUMABLE_FIELDS and not n.startswith(RESUMABLE_PREFIXES)
        and old_flat.get(n, "<absent>") != new_flat.get(n, "<absent>")
        and not (n not in old_flat and new_flat[n] is None)
    ]


def changes(old: dict[str, Any], new: dict[str, Any], fields: list[str]) -> list[str]:
    """'field: old -> new' (values as repr, '<absent>' where missing) for each of `fields`."""
    old_flat, new_flat = flatten(old), flatten(new)
    return [f"{n}: {old_flat.get(n, '<absent>')!r} -> {new_flat.get(n, '<absent>')!r}"
            for n in fields]


def read_recorded(workdir: str) -> dict[str, Any] | None:
    """WORKDIR/config.json (None when absent). Raises SineError when it is unreadable."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise SineError(f"{path}: unreadable ({e}); remove it to start this workdir afresh")


def check_model_matches(config: config_dict.ConfigDict, workdir: str) -> None:
    """Refuses to restore WORKDIR's checkpoints into a model other than the one it trained.

    Only `model.*` is compared with WORKDIR/config.json (nothing recorded: nothing to check):
    evaluating or exporting may change anything else (eval.mask_history, serving.*). Without
    this check a changed switch or preset would restore the weights it shares with the
    trained model and silently drop the rest (Orbax restores the parameters asked for).

    Raises:
        SineError: naming the differing fields and the overrides that restore the trained
            model; or config.json is unreadable.
    """
    recorded = read_recorded(workdir)
    if recorded is None:
        return
    current = json.loads(config.to_json())
    fields = [n for n in differing_fields(recorded, current) if n.startswith("model.")][:5]
    if fields:
        old = flatten(recorded)
        fixes = " ".join(f"--config.{n}={old[n]}" for n in fields if n in old)
        shown = ", ".join(changes(recorded, current, fields))
        raise SineError(f"{workdir} trained another model ({shown}; "
                        f"{os.path.join(workdir, CONFIG_FILE)}); restore it with the model it "
                        f"trained: {fixes}")


def check_or_record(config: config_dict.ConfigDict, workdir: str, *, allow_change: bool) -> None:
    """Refuses a config that differs from the workdir's recorded one; records it otherwise."""
    new = json.loads(config.to_json())
    old = read_recorded(workdir)
    if old is not None:
        fields = differing_fields(old, new)
        if fields and not allow_change:
            shown = ", ".join(changes(old, new, fields[:5]))
            more = f" and {len(fields) - 5} more" if len(fields) > 5 else ""
            raise SineError(
                f"{workdir} was started with another config ({shown}{more}); use a new "
                f"--workdir, or pass --allow_config_change to resume with the new values"
            )
    write_json_atomic(os.path.join(workdir, CONFIG_FILE), new)
