"""The config fields' one-line descriptions, read from the schema's own comments
(`configs/default.py`: a field's end-of-line comment, or for a field without one the comment
lines directly above it), and the listing of a resolved config that `--mode=config` prints.
The comments stay the one source of truth: nothing here repeats them.
"""

import ast
import io
import tokenize
from typing import Any

from ml_collections import config_dict


def field_descriptions(source: str) -> dict[str, str]:
    """{dotted field name: description} of the leaf fields that the `get_config()` in
    `source` (a schema module's text) assigns, in source order.

    The body is read as a flat list of statements such as `config.data = data =
    ConfigDict()` (names `data` the group "data") and `data.format = "synthetic"  # ...`
    (the field "data.format"); a field without any comment gets "".
    """
    comments = {}  # line -> (text, whether code precedes it on its line)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            comments[token.start[0]] = (text, bool(token.line[: token.start[1]].strip()))
    function = next(node for node in ast.parse(source).body
                    if isinstance(node, ast.FunctionDef) and node.name == "get_config")
    groups: dict[str, str] = {}  # local name -> its group's dotted prefix ("" = the root)
    descriptions = {}
    for statement in function.body:
        if not isinstance(statement, ast.Assign):
            continue
        if _is_config_dict(statement.value):  # a group, named by its Name targets
            prefix = _dotted(statement.targets[0], groups) or ""
            groups.update({t.id: prefix for t in statement.targets if isinstance(t, ast.Name)})
            continue
        for target in statement.targets:
            name = _dotted(target, groups)
            if name:
                descriptions[name] = _comment_of(statement, comments)
    return descriptions


def _is_config_dict(value: ast.expr) -> bool:
    return isinstance(value, ast.Call) and getattr(value.func, "attr", None) == "ConfigDict"


def _dotted(target: ast.expr, groups: dict[str, str]) -> str | None:
    """'data.synthetic.seed' for `data.synthetic.seed` where `data` names the group "data";
    None for a target that is not a field."""
    parts = []
    while isinstance(target, ast.Attribute):
        parts.append(target.attr)
        target = target.value
    if not isinstance(target, ast.Name) or target.id not in groups or not parts:
        return None
    prefix = groups[target.id]
    return ".".join(([prefix] if prefix else []) + parts[::-1])


def _comment_of(statement: ast.Assign, comments: dict[int, tuple[str, bool]]) -> str:
    """The end-of-line comment of the statement's last line, else the full-line comments
    directly above it, joined into one line."""
    text, after_code = comments.get(statement.end_lineno, ("", False))
    if after_code:
        return text
    lines = []
    line = statement.lineno - 1
    while line in comments and not comments[line][1]:
        lines.append(comments[line][0])
        line -= 1
    return " ".join(reversed(lines))


def flat_fields(config: config_dict.ConfigDict | dict, prefix: str = "") -> dict[str, Any]:
    """{dotted name: value} of every leaf field (tuples and None placeholders as they are),
    in ConfigDict's order (sorted by name)."""
    fields = {}
    for key, value in config.items():
        if isinstance(value, (config_dict.ConfigDict, dict)):
            fields.update(flat_fields(value, f"{prefix}{key}."))
        else:
            fields[f"{prefix}{key}"] = value
    return fields


def listing(
    config: config_dict.ConfigDict, descriptions: dict[str, str],
    defaults: config_dict.ConfigDict,
) -> str:
    """One line per field, `name = value  # description`, in the schema's order (fields the
    schema lacks last); a value other than the schema's default ends with `[default: X]`."""
    values = flat_fields(config)
    default_values = flat_fields(defaults)
    names = [n for n in descriptions if n in values] + [n for n in values if n not in descriptions]
    assignments = [f"{name} = {values[name]!r}" for name in names]
    width = max(map(len, assignments))
    lines = []
    for name, assignment in zip(names, assignments):
        note = descriptions.get(name, "(not a field of the schema)")
        if name not in default_values:
            note += " [default: absent]"
        elif default_values[name] != values[name]:
            note += f" [default: {default_values[name]!r}]"
        lines.append(f"{assignment.ljust(width)}  # {note}")
    return "\n".join(lines)
