"""jsonargparse's parse errors as one sentence that names the option, the value and the fix.

Its own message is a dump of the type union it tried (10-70 lines with the usage); a user needs
the option, what was given and the nearest valid name.
"""

from __future__ import annotations

import difflib
import inspect
import re
from importlib import import_module
from pathlib import Path

import torch
import yaml
from lightning.pytorch.loggers import Logger

from linreg_pl.data.sources import DataSource
from linreg_pl.errors import InputError

# Options that take a class by name, and the base class whose subclasses are the valid names.
CLASS_OPTIONS = {
    "model.optimizer": torch.optim.Optimizer,
    "model.lr_scheduler": torch.optim.lr_scheduler.LRScheduler,
    "data.source": DataSource,
    "trainer.logger": Logger,
}


def one_line(message: str, args: list[str] = ()) -> str:
    """The sentence for a jsonargparse error message; ``args`` (the command line) tells whether a
    value came from a flag or from a ``--config`` file, which is then named.

    >>> one_line('Parser key "model.optimizer":\\n  - Expected a dot import path string: Adamm\\n  Given value: Adamm')
    "--model.optimizer Adamm is not a valid choice; did you mean 'Adam'? (--help lists the options)"
    >>> one_line('Parser key "data.seed":\\n  Expected a <class \\'int\\'>. Got value: 1.5')
    '--data.seed 1.5: expected an int (--help lists the options)'
    >>> one_line('Parser key "split":\\n  Expected a typing.Literal[\\'all\\', \\'test\\']. Got value: bogus')
    "--split bogus: expected one of 'all', 'test' (--help lists the options)"
    """
    key = re.search(r'Parser key "([^"]+)"', message)
    option = re.search(r"Option '([^']+)' is not accepted.*?class_path='([^']+)'", message, re.S)
    if key and option:
        module, _, name = option[2].rpartition(".")
        parameters = [p for p in inspect.signature(getattr(import_module(module), name)).parameters if p != "params"]
        hint = _did_you_mean(option[1], parameters)
        return f"--{key[1]}.{option[1]} is not an argument of {name}{hint} {name} takes {parameters}."
    required = re.search(r"class_path '([^']+)':\s+the following arguments are required: (.*)", message)
    if key and required:
        name = required[1].rsplit(".", 1)[-1]
        needed = " and ".join(f"--{key[1]}.{argument.strip()}" for argument in required[2].split(","))
        return f"--{key[1]} {name} needs {needed}{_where(key[1], args)} (--help lists the options)"
    # A value inside a class's arguments (--model.optimizer.lr abc) nests a second "Parser key".
    full_key = ".".join(re.findall(r'Parser key "([^"]+)"', message))
    innermost = message[message.rfind("Parser key") :]
    given = re.search(r"(?:Given|Got) value: (.*?)(?:\. Got value:.*)?$", innermost, re.M)
    if key and given and full_key not in CLASS_OPTIONS and (expected := _expected(innermost)):
        value = given[1].strip()
        return f"--{full_key} {value}: expected {expected}{_where(full_key, args)} (--help lists the options)"
    given = re.search(r"Given value: (.*)", message) or re.search(r"dot import path string: (\S+)", message)
    if key and given:
        value = given[1].strip()
        base = CLASS_OPTIONS.get(key[1])
        hint = _did_you_mean(value, sorted({c.__name__ for c in _subclasses(base)})) if base else ""
        return f"--{key[1]} {value} is not a valid choice{hint} (--help lists the options)".replace(". (", " (")
    first = next((line.strip() for line in message.splitlines() if line.strip()), message)
    if first.startswith("unrecognized arguments"):
        return f"{first}: options go straight after the script name, as --name value (--help lists them)"
    return f"{first} (--help lists the options)"


_ARTICLE = {"int": "an int", "float": "a float", "bool": "true or false", "str": "a string", "NoneType": "null"}


def _expected(message: str) -> str | None:
    """'a float', 'an int or null', "one of 'all', 'test'": the plain types and literals a
    jsonargparse message says it tried, or None."""
    literals = re.findall(r"Expected a typing\.Literal\[(.*?)\]", message)
    types = re.findall(r"Expected a <class '(\w+)'>", message)
    if not literals and not types:
        return None
    choices = ", ".join(literals)
    plain = [_ARTICLE.get(name, f"a {name}") for name in types]
    return " or ".join(([f"one of {choices}"] if choices else []) + plain)


def _where(key: str, args) -> str:
    """' (set in FILE)' for the last ``--config`` file of ``args`` that sets ``key``, unless a flag
    sets it."""
    flag = f"--{key}"
    if any(arg == flag or arg.startswith((flag + "=", flag + ".")) for arg in args):
        return ""
    for path in reversed(config_paths(args)):
        try:
            value = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError):
            continue
        for part in key.split("."):
            if isinstance(value, dict) and part not in value:
                value = value.get("init_args")
            value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
        if value is not _MISSING:
            return f" (set in {path})"
    return ""


_MISSING = object()


def config_paths(args) -> list[str]:
    """The ``--config`` / ``-c`` files of a command line, in order."""
    paths, args = [], list(args)
    for i, arg in enumerate(args):
        flag, has_value, value = arg.partition("=")
        if flag in ("--config", "-c"):
            if has_value:
                paths.append(value)
            elif i + 1 < len(args):
                paths.append(args[i + 1])
    return paths


def check_config_files(args) -> None:
    """Every ``--config`` file of ``args`` can be read and maps option names to values; else one
    ``InputError`` that names the file (jsonargparse says only "Unexpected config:", or PyYAML
    prints a traceback)."""
    for path in config_paths(args):
        read_config(path)


def read_config(path: str | Path) -> dict:
    """A config file's content: a mapping, or one ``InputError`` naming the file and the problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"--config '{path}': file not found.") from None
    except (OSError, UnicodeDecodeError, RuntimeError) as error:  # RuntimeError: a symlink loop
        raise InputError(f"--config '{path}' cannot be read ({_reason(error)}); give a YAML file.") from None
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise InputError(f"--config '{path}' is not valid YAML{where}: {problem}.") from None
    if not isinstance(content, dict):
        kind = "empty" if content is None else f"a YAML {type(content).__name__}, not a mapping"
        raise InputError(
            f"--config '{path}' is {kind}; a config maps option names to values, e.g. 'trainer: {{max_epochs: 10}}'."
        )
    return content


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error)


def _did_you_mean(given: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(given, choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else "."


def _subclasses(base: type) -> set[type]:
    found = set()
    for subclass in base.__subclasses__():
        if not subclass.__name__.startswith("_"):
            found.add(subclass)
        found |= _subclasses(subclass)
    return found
