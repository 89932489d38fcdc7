"""Checks of an in-memory table where it enters the data module: finite values, a target that
varies, a width the exact reference can take, and magnitudes the training precision can hold and
resolve. Each refuses with one sentence naming the column and the fix."""

from __future__ import annotations

import math

import numpy as np
import torch

from linreg_pl.data.sources import Table
from linreg_pl.errors import InputError


def check_finite(table: Table) -> None:
    for values, names in ((table.x, table.feature_names), (table.y, table.target_names)):
        bad = ~np.isfinite(values).all(axis=0)
        if bad.any():
            columns = [name for name, is_bad in zip(names, bad, strict=True) if is_bad]
            raise InputError(f"columns {columns} hold NaN or infinite values; fill or drop those rows.")


def check_target_varies(y: np.ndarray, names: list[str]) -> None:
    """A target with one value on every training row leaves nothing to learn (the model is that
    constant, R² is undefined, and no loss gap can be measured against an optimum of 0)."""
    constant = [
        (name, value) for name, value, varies in zip(names, y[0], np.ptp(y, axis=0) > 0, strict=True) if not varies
    ]
    if constant:
        values = ", ".join(f"{name!r} is {value:g}" for name, value in constant)
        raise InputError(
            f"the target is the same on every training row ({values}): there is nothing to learn; "
            "choose another target column with --data.source.target, or check the data."
        )


# The widest table trained: every run solves least squares exactly (the report, StopAtOptimum,
# AutoSGD's step, the inference table and the ridge curve), in O(d²) memory and O(d³) time per
# solve; at 1,000 columns that is 8 MB and about a second per solve on two cores, at 10,000 it
# would be 0.8 GB per copy of the d x d matrix and minutes per solve.
MAX_FEATURES = 1000


def check_width(n_features: int) -> None:
    """Refuse, before any pass over the rows, a table wider than ``MAX_FEATURES`` columns."""
    if n_features > MAX_FEATURES:
        raise InputError(
            f"the data have {n_features:,} feature columns, more than the {MAX_FEATURES:,} this trainer takes: its "
            f"exact least-squares reference needs {8 * (n_features + 1) ** 2 / 1e9:.2g} GB per copy of a d x d "
            "matrix and O(d³) time; choose at most "
            f"{MAX_FEATURES:,} columns with --data.source.features (e.g. after a screening step)."
        )


# A column whose values the dtype rounds in steps larger than this share of their spread.
COARSEST_STEP = 0.01


def check_resolution(table: Table, dtype: torch.dtype) -> None:
    """Refuse columns that ``dtype`` cannot tell apart: a large offset and a small spread
    (timestamps, 1.7e9 + [0, 1000)) round in float32 to steps of 128, and the model sees a few
    distinct values. The data reach the model in ``dtype`` before its standardization, so
    standardizing does not help; float64 does.

    Examples
    --------
    >>> from linreg_pl import Points
    >>> check_resolution(Points(x=[1.7e9, 1.7e9 + 500, 1.7e9 + 999], y=[0, 1, 2]).load(), torch.float64)
    >>> check_resolution(Points(x=[1.7e9, 1.7e9 + 500, 1.7e9 + 999], y=[0, 1, 2]).load(), torch.float32)
    Traceback (most recent call last):
    ...
    linreg_pl.errors.InputError: column(s) ['x'] vary by 408 around 1.7e+09, ...
    """
    if len(table.x) < 2:
        return
    values = np.hstack([table.x, table.y])
    spread = values.std(axis=0)
    step = np.spacing(np.abs(values).max(axis=0).astype(torch.empty(0, dtype=dtype).numpy().dtype))
    coarse = (spread > 0) & (step > COARSEST_STEP * spread)
    if coarse.any():
        names = [name for name, bad in zip(table.feature_names + table.target_names, coarse, strict=True) if bad]
        j = int(np.flatnonzero(coarse)[0])
        center = float(np.mean(values[:, j]))
        raise InputError(
            f"column(s) {names} vary by {spread[j]:.3g} around {center:.3g}, which {str(dtype).removeprefix('torch.')} "
            f"rounds in steps of {float(step[j]):.3g} ({float(step[j] / spread[j]):.0%} of that spread): training "
            "cannot resolve them; train in float64 with --trainer.precision 64-true, or subtract the offset "
            f"(e.g. {names[0]} - {center:.6g}) in the data."
        )


def check_range(table: Table, dtype: torch.dtype) -> None:
    """Refuse columns whose squares, summed over the rows, overflow ``dtype`` or underflow it.

    The loss, the metrics and the exact solution sum squares of values in original units over up
    to every row (standardization happens inside the model, on the raw values), so every value
    must satisfy sqrt(tiny) <= |value| <= sqrt(max / n_rows) for the dtype (zeros aside).

    Examples
    --------
    >>> from linreg_pl import Points
    >>> check_range(Points(x=[1, 2], y=[0, 1e39]).load(), torch.float64)
    >>> check_range(Points(x=[1, 2], y=[0, 1e39]).load(), torch.float32)
    Traceback (most recent call last):
    ...
    linreg_pl.errors.InputError: column(s) ['y'] hold values up to 1e+39, ...
    """
    n = len(table.x)
    if n == 0:
        return
    info = torch.finfo(dtype)
    high, low = math.sqrt(info.max / n), math.sqrt(info.tiny)
    dtype_name = str(dtype).removeprefix("torch.")
    names = table.feature_names + table.target_names
    magnitude = np.abs(np.hstack([table.x, table.y])).max(axis=0)
    if dtype == torch.float64:
        fix = "rescale them (e.g. express them in other units) before training"
    else:
        fix = "train in float64 with --trainer.precision 64-true, or rescale them (e.g. express them in other units)"
    if huge := [name for name, m in zip(names, magnitude, strict=True) if m > high]:
        raise InputError(
            f"column(s) {huge} hold values up to {magnitude.max():.3g}, too large for {dtype_name} training on "
            f"{n} rows: the loss sums squares of values in the original units, which overflows beyond "
            f"|value| = {high:.3g}; {fix}."
        )
    if tiny := [name for name, m in zip(names, magnitude, strict=True) if 0 < m < low]:
        largest = max(m for name, m in zip(names, magnitude, strict=True) if name in tiny)
        raise InputError(
            f"column(s) {tiny} hold values no larger than {largest:.3g}, too small for {dtype_name} training: their "
            f"squares underflow below |value| = {low:.3g}; {fix}."
        )
