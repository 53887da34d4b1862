"""Sweep files: `quantbench run`'s settings as YAML keys, plus `exclude:` and `groups:`.

    model: [random:gpt2-124m, random:llama-3.2-1b]
    schemes: [bf16, torchao-int4wo]
    runtime: [eager, compiled]
    batch_size: [1, 8, 32]
    exclude:
      - {runtime: eager, batch_size: [8, 32]}     # every key must match; values may be lists
      - {batch_size: 32, schemes: [bnb-nf4]}      # with schemes: only those leave the point
    groups:                                        # each group: the settings above, overridden
      batch-1: {batch_size: 1}
      batch-scaling: {model: random:llama-3.2-1b, runtime: compiled}

Every error names the file, the line and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from quantbench.errors import UsageError
from quantbench.runconfig import AXES, FIELDS, _suggest, normalize

GROUP_KEYS = set(AXES) | {"schemes", "baseline"}
EXCLUDE_KEYS = set(AXES) | {"schemes"}


@dataclass
class Sweep:
    path: str
    settings: dict  # flat RunConfig settings
    groups: dict | None  # name -> {axis: [values], schemes: [...], baseline: name}
    exclude: list | None  # [{axis: [values], schemes: [...]}]


def load_sweep(path: str) -> Sweep:
    import yaml

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"sweep file {path} not found: pass the path of a YAML file "
                         "(see `quantbench sweep --help` for an example)")
    text = file.read_text(errors="replace")
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{where}: not valid YAML: {problem}") from None
    finally:
        loader.dispose()
    if root is None:
        raise UsageError(f"{path}: the file is empty: give at least `model:` or `schemes:`")
    if not isinstance(root, yaml.MappingNode):
        raise UsageError(f"{path}:{root.start_mark.line + 1}: a sweep file is a mapping of "
                         "settings (model:, schemes:, batch_size:, ...)")
    constructor = yaml.SafeLoader("")
    settings, groups, exclude = {}, None, None
    for key_node, value_node in root.value:
        key = str(key_node.value)
        name = key.replace("-", "_")
        line = key_node.start_mark.line + 1

        def where(k, line=line):
            return f"{path}:{line}: {k}"

        value = constructor.construct_object(value_node, deep=True)
        if name in settings:
            raise UsageError(f"{where(key)}: set twice in the file")
        if name == "groups":
            groups = _groups(value_node, constructor, path)
        elif name == "exclude":
            exclude = _exclude(value_node, constructor, path)
        elif name in FIELDS:
            settings[name] = normalize(FIELDS[name][1], value, where, key)
        else:
            raise UsageError(f"{where(key)}: unknown key" + _suggest(name, list(FIELDS) +
                                                                   ["groups", "exclude"]))
    return Sweep(str(path), settings, groups, exclude)


def _axis_values(mapping_node, constructor, path: str, allowed: set, what: str) -> dict:
    import yaml

    if not isinstance(mapping_node, yaml.MappingNode):
        raise UsageError(f"{path}:{mapping_node.start_mark.line + 1}: each {what} is a mapping "
                         "of settings ({runtime: eager, batch_size: [8, 32]})")
    out = {}
    for key_node, value_node in mapping_node.value:
        key = str(key_node.value)
        name = key.replace("-", "_")
        line = key_node.start_mark.line + 1
        if name not in allowed:
            raise UsageError(f"{path}:{line}: {key}: not a key of {what}s (they take "
                             f"{', '.join(sorted(allowed))})" + _suggest(name, allowed))
        value = constructor.construct_object(value_node, deep=True)
        f = FIELDS[name][1]
        if name == "baseline":
            out[name] = normalize(f, value, lambda k, line=line: f"{path}:{line}: {k}", key)
            continue
        values = normalize(f, value if isinstance(value, list) else [value],
                           lambda k, line=line: f"{path}:{line}: {k}", key)
        out[name] = values
    return out


def _groups(node, constructor, path: str) -> dict:
    import yaml

    if not isinstance(node, yaml.MappingNode) or not node.value:
        raise UsageError(f"{path}:{node.start_mark.line + 1}: groups: a mapping of names to "
                         "settings (batch-scaling: {batch_size: [1, 8, 32]})")
    out = {}
    for key_node, value_node in node.value:
        name = str(key_node.value)
        if name in out:
            raise UsageError(f"{path}:{key_node.start_mark.line + 1}: groups: '{name}' twice")
        out[name] = _axis_values(value_node, constructor, path, GROUP_KEYS, "group")
    return out


def _exclude(node, constructor, path: str) -> list:
    import yaml

    if not isinstance(node, yaml.SequenceNode):
        raise UsageError(f"{path}:{node.start_mark.line + 1}: exclude: a list of rules "
                         "(- {runtime: eager, batch_size: 32})")
    rules = [_axis_values(item, constructor, path, EXCLUDE_KEYS, "exclude rule")
             for item in node.value]
    for item, rule in zip(node.value, rules):
        if not rule:
            raise UsageError(f"{path}:{item.start_mark.line + 1}: an empty exclude rule would "
                             "exclude everything: name what to leave out")
    return rules
