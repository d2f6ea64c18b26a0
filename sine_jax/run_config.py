"""The config and the input a workdir was started with, and the checks that a rerun uses the
same ones.

`WORKDIR/config.json` is written when a run starts. Rerunning on the same workdir resumes,
so the config must match it except for fields that only change the run's length or its
bookkeeping (RESUMABLE_FIELDS), the export's settings (`serving.*`) and the device mesh
(`mesh.*`); anything else is refused with the differing fields named, unless the user
passes `--allow_config_change`.

`WORKDIR/inputs.json` records the input files (the interactions file and the metadata file
read beside it): size, mtime and the SHA-256 of the whole file. The checkpoints were trained
on that content (item ids are numbered by popularity in it), so a rerun, an evaluation or an
export on other content is refused naming the file, unless `--allow_config_change`. A file
whose size and mtime are those recorded is taken as unchanged without reading it (any
ordinary write changes the mtime); otherwise its hash decides, so a copy or a `touch` is
not a change.
"""

import hashlib
import importlib.util
import json
import os
import sys
from typing import Any

from ml_collections import config_dict

from sine_jax import sine_options
from sine_jax.errors import ConfigError, SineError
from sine_jax.workdir import write_json_atomic

CONFIG_FILE = "config.json"
INPUTS_FILE = "inputs.json"
_HASH_BLOCK = 1 << 20
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
    except SineError:  # already one line that names what to fix (configs/recorded.py)
        raise
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


# Fields a newer version added with a value that keeps the old behaviour: a config recorded
# before the field existed is the same config when the field has this value, and reading
# such a record (`recorded_config`) gives the field this value.
ADDED_FIELDS = {"train.weight_decay": 0.0, "model.mind.dynamic_interests": False}


def with_resolved_switches(config: dict[str, Any], *, recorded: bool = False) -> dict[str, Any]:
    """`config` (as a dict) with SINE's switch fields (`model.*`, None = the preset's value)
    replaced by the values the model resolves them to, so that a record names the model a run
    trained even after a preset changes meaning; other models' configs are returned as given.

    `recorded`: `config` is a WORKDIR/config.json, whose unset switches mean what the presets
    meant before runs recorded them resolved (`sine_options.RECORDED_BEFORE_RESOLVING`). A config
    that does not resolve (a bad preset or switch value) is returned as given; its checks
    name the field.
    """
    model = config.get("model")
    if not isinstance(model, dict) or model.get("name", "sine") not in sine_options.SINE_NAMES:
        return config
    presets = sine_options.RECORDED_BEFORE_RESOLVING if recorded else sine_options.PRESETS
    try:
        switches = sine_options.resolved_switches(model, presets)
    except (ConfigError, TypeError):
        return config
    return {**config, "model": {**model, **switches}}


def _recorded_flat(recorded: dict[str, Any]) -> dict[str, Any]:
    """A recorded config (config.json, results.json's config) flattened, SINE's switches
    resolved with the presets of the record's time."""
    return flatten(with_resolved_switches(recorded, recorded=True))


def differing_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Fields (dotted names) whose values differ between a recorded config `old` and a config
    `new`, run-length and export fields excepted, SINE's switches compared as resolved (an
    unset switch is its preset's value; see `with_resolved_switches`).

    A field that a newer version added as an unset switch (None: keep the old behaviour), or
    with its ADDED_FIELDS value, is not a difference from a config recorded before it existed.
    `model.NAME.*` holds the fields of the model called NAME only: when both configs train
    another model, those fields are not compared.
    """
    old_flat = _recorded_flat(old)
    new_flat = flatten(with_resolved_switches(new))
    names = sorted(set(old_flat) | set(new_flat))
    model = old_flat.get("model.name")
    same_model = model is not None and model == new_flat.get("model.name")
    return [
        n for n in names
        if n not in RESUMABLE_FIELDS and not n.startswith(RESUMABLE_PREFIXES)
        and old_flat.get(n, "<absent>") != new_flat.get(n, "<absent>")
        and not (n not in old_flat and new_flat[n] in (None, ADDED_FIELDS.get(n)))
        and not (same_model and _other_model_field(n, model))
    ]


def _other_model_field(name: str, model: str) -> bool:
    """Whether `name` is a field of a model's own group (model.GROUP.FIELD) other than `model`."""
    parts = name.split(".")
    return len(parts) == 3 and parts[0] == "model" and parts[1] != model


def changes(old: dict[str, Any], new: dict[str, Any], fields: list[str]) -> list[str]:
    """'field: old -> new' (values as repr, '<absent>' where missing, switches resolved as
    `differing_fields` compares them) for each of `fields`."""
    old_flat = _recorded_flat(old)
    new_flat = flatten(with_resolved_switches(new))
    return [f"{n}: {old_flat.get(n, '<absent>')!r} -> {new_flat.get(n, '<absent>')!r}"
            for n in fields]


def read_recorded(workdir: str) -> dict[str, Any] | None:
    """WORKDIR/config.json (None when absent). Raises SineError when it is unreadable or not a
    config (a JSON object)."""
    return _read_json_object(os.path.join(workdir, CONFIG_FILE))


def _read_json_object(path: str) -> dict[str, Any] | None:
    """The JSON object in `path`, None when absent; SineError naming the file otherwise."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        reason = str(e) if not isinstance(e, RecursionError) else "nested too deeply"
        raise SineError(f"{path}: unreadable ({reason}); remove it to start this workdir "
                        f"afresh") from None
    if not isinstance(value, dict):
        raise SineError(f"{path}: holds a JSON {type(value).__name__}, not an object; remove "
                        f"it to start this workdir afresh")
    return value


def recorded_config(workdir: str, schema: config_dict.ConfigDict) -> config_dict.ConfigDict:
    """WORKDIR/config.json as a ConfigDict of `schema`'s types: its lists become tuples where
    the schema has a tuple, its nulls stay None placeholders of the schema's type (so that a
    `--config.FIELD=VALUE` override parses as for the config file), and a field that the
    record lacks (added since) keeps the schema's value, or its ADDED_FIELDS value (the
    behaviour the run was trained with). `schema` is changed and returned.

    Raises:
        SineError: WORKDIR has no config.json, it is unreadable, or a recorded field is not
            in the schema or has a value of another type.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    recorded = read_recorded(workdir)
    if recorded is None:
        raise SineError(f"{path}: no such file (no run was started in {workdir}); give the "
                        f"--config that trains it")
    recorded_flat = _recorded_flat(recorded)
    for name, value in ADDED_FIELDS.items():  # added since: the value of the old behaviour
        recorded_flat.setdefault(name, value)
    for name, value in recorded_flat.items():
        *groups, field = name.split(".")
        parent = schema
        for group in groups:
            parent = parent.get(group) if isinstance(parent, config_dict.ConfigDict) else None
        if (not isinstance(parent, config_dict.ConfigDict) or field not in parent
                or isinstance(parent[field], config_dict.ConfigDict)):
            raise SineError(f"{path}: {name} is not a field of this version's config; give "
                            f"--config and the --config.FIELD=VALUE flags of the run instead")
        if isinstance(parent[field], tuple) and isinstance(value, list):
            value = tuple(value)
        try:
            parent[field] = value
        except (TypeError, ValueError) as e:
            raise SineError(f"{path}: {name}={value!r}: {e}") from None
    return schema


# The config file of a workdir's recorded config: --config=RECORDED_CONFIG_FILE:WORKDIR.
RECORDED_CONFIG_FILE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "recorded.py"
)


def with_recorded_config(argv: list[str], modes: tuple[str, ...]) -> list[str]:
    """`argv` with `--config=RECORDED_CONFIG_FILE:WORKDIR` added when --mode is one of
    `modes` (default "train"), a --workdir is given and no --config: the workdir's
    config.json is then the config, and `--config.FIELD=VALUE` flags override it."""
    values = {}
    for i, arg in enumerate(argv[1:], 1):
        for name in ("config", "mode", "workdir"):
            if arg == f"--{name}" and i + 1 < len(argv):
                values[name] = argv[i + 1]
            elif arg.startswith(f"--{name}="):
                values[name] = arg.split("=", 1)[1]
    if "config" in values or "workdir" not in values or values.get("mode", "train") not in modes:
        return argv
    return [argv[0], f"--config={RECORDED_CONFIG_FILE}:{values['workdir']}", *argv[1:]]


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
        old = _recorded_flat(recorded)
        fixes = " ".join(f"--config.{n}={old[n]}" for n in fields if n in old)
        shown = ", ".join(changes(recorded, current, fields))
        raise SineError(f"{workdir} trained another model ({shown}; "
                        f"{os.path.join(workdir, CONFIG_FILE)}); restore it with the model it "
                        f"trained: {fixes}")


def check_or_record(config: config_dict.ConfigDict, workdir: str, *, allow_change: bool) -> None:
    """Refuses a config that differs from the workdir's recorded one; records it otherwise,
    SINE's switches resolved (`with_resolved_switches`)."""
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
    write_json_atomic(os.path.join(workdir, CONFIG_FILE), with_resolved_switches(new))


def fingerprint(path: str, recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"size", "mtime_ns", "sha256"} of `path` (the whole file hashed); `recorded`'s hash is
    reused without reading the file when the size and mtime are the recorded ones."""
    stat = os.stat(path)
    if recorded and (recorded.get("size"), recorded.get("mtime_ns")) == (
            stat.st_size, stat.st_mtime_ns):
        return dict(recorded)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}


def _read_inputs(workdir: str) -> dict[str, dict[str, Any]] | None:
    path = os.path.join(workdir, INPUTS_FILE)
    record = _read_json_object(path)
    if record is None:
        return None
    files = record.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        raise SineError(f"{path}: not a record of input files; remove it to record the "
                        f"current input afresh")
    return files


def _input_change(workdir: str, recorded: dict[str, dict], current: dict[str, dict]) -> str:
    """A sentence naming the first input that differs, or "" when none does."""
    for path in sorted(set(recorded) | set(current)):
        old, new = recorded.get(path), current.get(path)
        if old is None:
            return f"{path} is read now but was not when {workdir} started"
        if new is None:
            return f"{path} was read when {workdir} started but is not now"
        if (old.get("size"), old.get("sha256")) != (new["size"], new["sha256"]):
            return (f"{path} changed since {workdir} started (size {old.get('size')} -> "
                    f"{new['size']} bytes, sha256 {str(old.get('sha256'))[:12]} -> "
                    f"{new['sha256'][:12]})")
    return ""


def _current_inputs(paths: list[str], recorded: dict[str, dict] | None) -> dict[str, dict]:
    recorded = recorded or {}
    try:
        return {p: fingerprint(p, recorded.get(p)) for p in paths}
    except OSError as e:
        raise SineError(f"{e.filename}: cannot read ({e.strerror})") from None


def check_inputs(workdir: str, paths: list[str], *, allow_change: bool = False) -> None:
    """Refuses to evaluate or export WORKDIR on input content other than it trained on
    (nothing recorded, e.g. a workdir of an earlier version: nothing to check).

    Raises:
        SineError: naming the first changed file, unless `allow_change`.
    """
    recorded = _read_inputs(workdir)
    if recorded is None or allow_change:
        return
    change = _input_change(workdir, recorded, _current_inputs(paths, recorded))
    if change:
        raise SineError(_refusal(change))


def check_or_record_inputs(workdir: str, paths: list[str], *, allow_change: bool) -> None:
    """Refuses a rerun on input content other than WORKDIR started on (unless
    `allow_change`); records the current input (WORKDIR/inputs.json) otherwise."""
    recorded = _read_inputs(workdir)
    current = _current_inputs(paths, recorded)
    if recorded is not None and not allow_change:
        change = _input_change(workdir, recorded, current)
        if change:
            raise SineError(_refusal(change))
    write_json_atomic(os.path.join(workdir, INPUTS_FILE), {"files": current})


def _refusal(change: str) -> str:
    return (f"{change}; its checkpoints were trained on the recorded content: restore the "
            f"file, use a new --workdir, or pass --allow_config_change to go on with the new "
            f"content")
