"""Choosing a data source resets its arguments: nothing of another source's config leaks in.

jsonargparse keeps the previous ``init_args`` when a later layer (a second ``--config``, or
``--data.source NAME`` on the command line) names another class, so parameters with the same name
(``bias``, ``n_samples``, ``noise``) would silently carry over from one source to the next. Here the
layers are read in order, each switch of class starts from an empty set of arguments, and every
argument that would leak is set back to the chosen class's default by one more flag, so that the
parser itself (``--print_config``, the saved config) sees the right values.
"""

from __future__ import annotations

import inspect
import json
from importlib import import_module
from pathlib import Path

import yaml

SOURCE = "--data.source"


def source_layers(args: list[str], first: dict | None = None) -> list[tuple[str | None, dict]]:
    """``(class_path or None, init_args)`` for each place that sets the data source, in order:
    ``first`` (e.g. a checkpoint's source), then every ``--config`` file and ``--data.source*`` flag.

    >>> source_layers(["--data.source", "MakeRegression", "--data.source.noise=20", "--data.batch_size", "5"])
    [('MakeRegression', {}), (None, {'noise': 20})]
    """
    layers = [(first.get("class_path"), dict(first.get("init_args") or {}))] if first else []
    i = 0
    while i < len(args):
        flag, has_value, value = args[i].partition("=")
        if not has_value and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value, i = args[i + 1], i + 1
        i += 1
        if flag in ("--config", "-c") and Path(value).is_file():
            source = ((yaml.safe_load(Path(value).read_text()) or {}).get("data") or {}).get("source")
            if isinstance(source, dict):
                layers.append((source.get("class_path"), dict(source.get("init_args") or {})))
            elif isinstance(source, str):
                layers.append((source, {}))
        elif flag == SOURCE:
            parsed = yaml.safe_load(value)
            if isinstance(parsed, dict):
                layers.append((parsed.get("class_path"), dict(parsed.get("init_args") or {})))
            else:
                layers.append((value, {}))
        elif flag.startswith(SOURCE + "."):
            name = flag[len(SOURCE) + 1 :].removeprefix("init_args.")
            layers.append((None, {name: yaml.safe_load(value)}))
    return layers


def reset_flags(layers: list[tuple[str | None, dict]]) -> list[str]:
    """``--data.source.NAME=DEFAULT`` for each argument that an earlier source's layers gave and the
    source chosen last would inherit, though nobody gave it for that source.

    >>> reset_flags([("SyntheticLinear", {"bias": 4.2, "noise": 0.01}), ("MakeRegression", {}), (None, {"noise": 20})])
    ['--data.source.bias=0.0']
    """
    chosen, given, earlier = None, set(), set()
    for class_path, init_args in layers:
        if class_path is not None and _short(class_path) != _short(chosen):
            earlier |= given
            chosen, given = class_path, set()
        given |= set(init_args)
    if chosen is None or not (leaked := earlier - given):
        return []
    parameters = inspect.signature(_resolve(chosen)).parameters
    flags = []
    for name in sorted(leaked):
        default = parameters[name].default if name in parameters else inspect.Parameter.empty
        if default is not inspect.Parameter.empty:
            value = default if isinstance(default, str) else json.dumps(default)
            flags.append(f"{SOURCE}.{name}={value}")
    return flags


def _resolve(class_path: str) -> type:
    """A source class from its full path, or its short name among linreg_pl's sources."""
    module, _, name = class_path.rpartition(".")
    return getattr(import_module(module or "linreg_pl"), name)


def _short(class_path: str | None) -> str | None:
    return None if class_path is None else class_path.rsplit(".", 1)[-1]
