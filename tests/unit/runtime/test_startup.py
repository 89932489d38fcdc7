"""linreg_pl.runtime.startup: importing the package imports Lightning without scipy.signal, which
stays importable, whole, for whoever needs it; nor does the package import scipy.stats."""

import subprocess
import sys
import textwrap

from tests.helpers import ROOT

# In a fresh interpreter: this one has imported Lightning (and scipy.signal with it) long ago.
CHECKS = textwrap.dedent(
    """
    import sys, types

    import linreg_pl.cli  # what scripts/train.py imports, the statistics of the report included
    from linreg_pl.runtime.startup import _ScipySignalStandIn

    assert "lightning.pytorch" in sys.modules and "torchmetrics" in sys.modules
    for module in ("scipy.signal", "scipy.stats"):  # ~0.9 s and ~0.5 s of every start
        assert module not in sys.modules, f"{module} was imported with the package"

    # Anything that reads the stand-in beyond torchmetrics' check gets the real module's attribute.
    stand_in = sys.modules["scipy.signal"] = _ScipySignalStandIn("scipy.signal")
    try:
        stand_in.__file__
    except AttributeError:
        pass
    else:
        raise AssertionError("the stand-in has a __file__")
    butter = stand_in.butter
    real = sys.modules["scipy.signal"]
    assert type(real) is types.ModuleType and real.butter is butter

    import scipy.signal

    assert scipy.signal is real and scipy.signal.lfilter([1.0], [1.0, -0.5], [1.0, 0.0]).tolist() == [1.0, 0.5]
    print("checked")
    """
)


def test_the_package_imports_lightning_without_scipy_signal_which_stays_importable():
    result = subprocess.run([sys.executable, "-c", CHECKS], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "checked"
