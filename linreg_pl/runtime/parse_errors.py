"""jsonargparse's parse errors as one sentence that names the option, the value and the fix.

Its own message is a dump of the type union it tried (10-70 lines with the usage); a user needs
the option, what was given and the nearest valid name.
"""

from __future__ import annotations

import difflib
import inspect
import re
from importlib import import_module

import torch
from lightning.pytorch.loggers import Logger

from linreg_pl.data.sources import DataSource

# Options that take a class by name, and the base class whose subclasses are the valid names.
CLASS_OPTIONS = {
    "model.optimizer": torch.optim.Optimizer,
    "model.lr_scheduler": torch.optim.lr_scheduler.LRScheduler,
    "data.source": DataSource,
    "trainer.logger": Logger,
}


def one_line(message: str) -> str:
    """The sentence for a jsonargparse error message.

    >>> one_line('Parser key "model.optimizer":\\n  - Expected a dot import path string: Adamm\\n  Given value: Adamm')
    "--model.optimizer Adamm is not a valid choice; did you mean 'Adam'? (--help lists the options)"
    """
    key = re.search(r'Parser key "([^"]+)"', message)
    option = re.search(r"Option '([^']+)' is not accepted.*?class_path='([^']+)'", message, re.S)
    if key and option:
        module, _, name = option[2].rpartition(".")
        parameters = [p for p in inspect.signature(getattr(import_module(module), name)).parameters if p != "params"]
        hint = _did_you_mean(option[1], parameters)
        return f"--{key[1]}.{option[1]} is not an argument of {name}{hint} {name} takes {parameters}."
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
