"""Choosing a class resets its arguments: nothing of another class's config leaks in.

jsonargparse keeps the previous ``init_args`` (given or default) when a later layer (a second
``--config``, or ``--data.source NAME`` on the command line) names another class, so parameters
with the same name silently carry over: a source's ``bias``, ``n_samples`` or ``noise``, or
``AutoSGD``'s ``momentum="auto"`` into ``torch.optim.SGD``. Here the layers are read in order, each
switch of class starts from an empty set of arguments, and every argument that would leak is set
back to the chosen class's default by one more flag, so that the parser itself (``--print_config``,
the saved config) sees the right values.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable
from importlib import import_module
from pathlib import Path

import yaml

from linreg_pl.runtime.parse_errors import read_config

# Options that take a class, and where their short names live.
CLASS_OPTIONS = {
    "data.source": ("linreg_pl",),
    "model.optimizer": ("torch.optim", "linreg_pl.exact.autosgd"),
    "model.lr_scheduler": ("torch.optim.lr_scheduler",),
    "model.net": ("linreg_pl.nets", "torch.nn"),
}

Layer = tuple[str | None, dict]


def class_layers(key: str, args: list[str], config_files: Iterable = (), first: dict | None = None) -> list[Layer]:
    """``(class_path or None, init_args)`` for each place that sets option ``key``, in order:
    ``first`` (e.g. a checkpoint's), the default ``config_files``, then every ``--config`` file and
    ``--KEY*`` flag of ``args``.

    >>> class_layers("data.source", ["--data.source", "MakeRegression", "--data.source.noise=20", "--data.seed", "5"])
    [('MakeRegression', {}), (None, {'noise': 20})]
    """
    layers = [_layer(first)] if first else []
    layers += [layer for path in config_files if (layer := _from_file(key, Path(path))) is not None]
    flag_name, i = f"--{key}", 0
    while i < len(args):
        flag, has_value, value = args[i].partition("=")
        if not has_value and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value, i = args[i + 1], i + 1
        i += 1
        if flag in ("--config", "-c") and (layer := _from_file(key, Path(value))) is not None:
            layers.append(layer)
        elif flag == flag_name:
            parsed = _scalar(value)
            layers.append(_layer(parsed) if isinstance(parsed, dict) else (value, {}))
        elif flag.startswith(flag_name + "."):
            layers.append((None, {flag[len(flag_name) + 1 :].removeprefix("init_args."): _scalar(value)}))
    return layers


def reset_flags(key: str, layers: list[Layer]) -> list[str]:
    """``--KEY.NAME=DEFAULT`` for each argument that an earlier class's layers set (given, or
    filled in from its defaults) and the class chosen last would inherit, though nobody gave it
    for that class.

    >>> reset_flags("data.source", [("SyntheticLinear", {"bias": 4.2}), ("MakeRegression", {}), (None, {"noise": 20})])
    ['--data.source.bias=0.0', '--data.source.n_samples=100']
    """
    chosen, given, earlier = None, set(), set()
    for class_path, init_args in layers:
        if class_path is not None and _short(class_path) != _short(chosen):
            if chosen is not None:
                earlier |= given | set(_defaults(key, chosen))
            chosen, given = class_path, set()
        given |= set(init_args)
    if chosen is None or not (leaked := earlier - given):
        return []
    defaults = _defaults(key, chosen)
    return [f"--{key}.{name}={_text(defaults[name])}" for name in sorted(leaked) if name in defaults]


def _from_file(key: str, path: Path) -> Layer | None:
    if not path.is_file():
        return None
    value = read_config(path)  # an unreadable or malformed config ends here, in one line
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        return value, {}
    return _layer(value) if isinstance(value, dict) else None


def _scalar(value: str):
    """A flag's value as the parser reads it: YAML where it is YAML (``1.5``, ``[a, b]``), else the
    text itself (``,`` is a YAML syntax error but a valid decimal mark)."""
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _layer(spec: dict) -> Layer:
    return spec.get("class_path"), dict(spec.get("init_args") or {})


def _defaults(key: str, class_path: str) -> dict:
    """The parameters of a class that have defaults; empty when the class cannot be found here
    (the parser then reports it)."""
    module, _, name = class_path.rpartition(".")
    for candidate in [module] if module else CLASS_OPTIONS.get(key, ()):
        try:
            cls = getattr(import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
        return {
            p.name: p.default
            for p in inspect.signature(cls).parameters.values()
            if p.default is not inspect.Parameter.empty and p.name != "params"
        }
    return {}


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _short(class_path: str | None) -> str | None:
    return None if class_path is None else class_path.rsplit(".", 1)[-1]
