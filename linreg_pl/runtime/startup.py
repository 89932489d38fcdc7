"""Importing Lightning without the second it spends on ``scipy.signal``.

Lightning imports torchmetrics, and torchmetrics imports ``scipy.signal`` (with it scipy.stats)
only to alias ``scipy.signal.hamming`` for SRMRpy, the package behind one of its audio metrics.
Nothing of a linear regression uses either, and that import is ~0.9 s of the ~5 s that importing
Lightning takes on 2 cores: a fifth of the start of every command. While Lightning imports, a
stand-in answers torchmetrics' check; then it leaves, so a later ``import scipy.signal``
(statsmodels, a user's code) imports the real module. Should anything read more of the stand-in
than that check, it gets the real module's attribute: slower, never wrong.
"""

import importlib
import sys
import types


class _ScipySignalStandIn(types.ModuleType):
    hamming = None  # torchmetrics: `if not hasattr(scipy.signal, "hamming")`, then leaves it alone

    def __getattr__(self, name: str):
        if name.startswith("__"):  # a module's own attributes (inspect reads every module's __file__)
            raise AttributeError(name)
        sys.modules.pop("scipy.signal", None)
        return getattr(importlib.import_module("scipy.signal"), name)


def import_lightning() -> None:
    """Import ``lightning.pytorch`` with ``scipy.signal`` left to whoever needs it. Does nothing
    where either is already imported."""
    if "lightning.pytorch" in sys.modules or "scipy.signal" in sys.modules:
        return
    stand_in = sys.modules["scipy.signal"] = _ScipySignalStandIn("scipy.signal")
    try:
        import lightning.pytorch  # noqa: F401
    finally:
        if sys.modules.get("scipy.signal") is stand_in:  # not already replaced by a read-through
            del sys.modules["scipy.signal"]
