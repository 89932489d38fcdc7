"""Where regression data comes from: each source's ``load()`` returns a validated ``Table``.

Sources are chosen in config by class path (``--data.source CSVSource``), so each one documents
its parameters in its signature and checks them where they enter.
"""

from __future__ import annotations

import csv
import difflib
import inspect
import json
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from jsonargparse.typing import Path_fr
from lightning.pytorch.utilities import rank_zero_only

from linreg_pl.errors import InputError


@dataclass
class Table:
    """Features ``x`` (n, d) and targets ``y`` (n, t) as float64, with names and known truth.

    ``true_weight`` (t, d) and ``true_bias`` (t,) are the generating parameters when the source
    knows them (synthetic sets), else None.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    target_names: list[str]
    true_weight: np.ndarray | None = None
    true_bias: np.ndarray | None = None


class DataSource:
    """Base class of the data sources; subclasses implement ``load``.

    ``standardize_by_default`` says whether features are standardized when the data module's
    ``standardize_features`` is left unset: off for the textbook sets, whose lessons train on the
    raw x, on for real data whose columns differ in scale.
    """

    standardize_by_default = False

    def __new__(cls, *args, **kwargs):
        # Keep the arguments as given, so that config() can describe the source in plain values.
        # (Copying and unpickling call __new__ without arguments, then restore the attributes.)
        source = super().__new__(cls)
        bound = inspect.signature(cls.__init__).bind_partial(source, *args, **kwargs)
        bound.apply_defaults()
        source.given_arguments = {k: v for k, v in bound.arguments.items() if k != "self"}
        return source

    def load(self) -> Table:
        raise NotImplementedError

    def config(self) -> dict:
        """``{"class_path": ..., "init_args": ...}`` in plain values: what a checkpoint stores to
        rebuild this source (paths made absolute, so it works from any directory)."""
        init_args = {name: _plain(value) for name, value in self.given_arguments.items()}
        return {"class_path": f"{type(self).__module__}.{type(self).__name__}", "init_args": init_args}


class SyntheticLinear(DataSource):
    """y = x @ weight.T + bias + noise, with x drawn uniform in [low, high) or standard normal.

    Parameters
    ----------
    weight : list of float, or list of lists of float
        True weights: one list per target (a flat list means one target).
    bias : float or list of float
        True bias, one per target.
    n_samples : int
        Number of rows to draw.
    distribution : {"normal", "uniform"}
        Input distribution: N(0, 1), or uniform in [low, high).
    low, high : float
        Bounds of the uniform distribution.
    noise : float
        Standard deviation of the Gaussian noise added to y.
    seed : int
        Seed of the generator: the same seed gives the same data.

    Examples
    --------
    >>> table = SyntheticLinear(weight=[2.0, -3.4], bias=4.2, n_samples=5).load()
    >>> table.x.shape, table.y.shape, table.true_weight.tolist(), table.true_bias.tolist()
    ((5, 2), (5, 1), [[2.0, -3.4]], [4.2])
    """

    def __init__(
        self,
        weight: list[float] | list[list[float]],
        bias: float | list[float] = 0.0,
        n_samples: int = 1000,
        distribution: Literal["normal", "uniform"] = "normal",
        low: float = 0.0,
        high: float = 1.0,
        noise: float = 0.01,
        seed: int = 0,
    ) -> None:
        self.weight = _as_matrix(weight, "weight")
        n_targets = self.weight.shape[0]
        self.bias = np.atleast_1d(np.asarray(bias, dtype=np.float64))
        if self.bias.ndim != 1 or self.bias.size not in (1, n_targets):
            raise InputError(f"bias={bias!r} must be one number or one per target ({n_targets} targets in weight).")
        self.bias = np.broadcast_to(self.bias, (n_targets,)).copy()
        if n_samples < 1:
            raise InputError(f"n_samples={n_samples} must be a positive integer.")
        if distribution not in ("normal", "uniform"):
            raise InputError(f"distribution={distribution!r} must be 'normal' or 'uniform'.")
        if distribution == "uniform" and not low < high:
            raise InputError(f"low={low} must be below high={high} for the uniform distribution.")
        if noise < 0:
            raise InputError(f"noise={noise} must be >= 0 (it is a standard deviation).")
        self.n_samples, self.distribution = n_samples, distribution
        self.low, self.high, self.noise, self.seed = low, high, noise, seed

    def load(self) -> Table:
        rng = np.random.default_rng(self.seed)
        n_targets, n_features = self.weight.shape
        shape = (self.n_samples, n_features)
        if self.distribution == "uniform":
            x = rng.uniform(self.low, self.high, size=shape)
        else:
            x = rng.standard_normal(size=shape)
        y = x @ self.weight.T + self.bias + self.noise * rng.standard_normal((self.n_samples, n_targets))
        return Table(
            name="synthetic",
            x=x,
            y=y,
            feature_names=[f"x{i}" for i in range(n_features)],
            target_names=[f"y{i}" for i in range(n_targets)] if n_targets > 1 else ["y"],
            true_weight=self.weight.copy(),
            true_bias=self.bias.copy(),
        )


class Points(DataSource):
    """Explicit points written in the config, e.g. the four-point lesson y = 2x + 3 on x = 1..4.

    Parameters
    ----------
    x : list of float, or list of lists of float
        Inputs: one number per row (one feature) or one list per row.
    y : list of float, or list of lists of float
        Targets: one number per row (one target) or one list per row.
    true_weight, true_bias : optional
        The parameters that generated the points, when known, to report beside the learned ones.

    Examples
    --------
    >>> t = Points(x=[1, 2, 3, 4], y=[5, 7, 9, 11], true_weight=[2.0], true_bias=3.0).load()
    >>> t.x.ravel().tolist(), t.y.ravel().tolist()
    ([1.0, 2.0, 3.0, 4.0], [5.0, 7.0, 9.0, 11.0])
    """

    def __init__(
        self,
        x: list[float] | list[list[float]],
        y: list[float] | list[list[float]],
        true_weight: list[float] | list[list[float]] | None = None,
        true_bias: float | list[float] | None = None,
    ) -> None:
        self.x = _as_rows(x, "x")
        self.y = _as_rows(y, "y")
        if len(self.x) != len(self.y):
            raise InputError(f"x has {len(self.x)} rows but y has {len(self.y)}: give one y per x.")
        self.true_weight = None if true_weight is None else _as_matrix(true_weight, "true_weight")
        self.true_bias = None if true_bias is None else np.atleast_1d(np.asarray(true_bias, float))
        if self.true_weight is not None and self.true_weight.shape != (self.y.shape[1], self.x.shape[1]):
            raise InputError(
                f"true_weight has shape {self.true_weight.shape} but the points have "
                f"{self.x.shape[1]} feature(s) and {self.y.shape[1]} target(s)."
            )

    def load(self) -> Table:
        n_features, n_targets = self.x.shape[1], self.y.shape[1]
        return Table(
            name="points",
            x=self.x,
            y=self.y,
            feature_names=[f"x{i}" for i in range(n_features)] if n_features > 1 else ["x"],
            target_names=[f"y{i}" for i in range(n_targets)] if n_targets > 1 else ["y"],
            true_weight=self.true_weight,
            true_bias=self.true_bias,
        )


class MakeRegression(DataSource):
    """scikit-learn's ``make_regression``; its generating coefficients are kept as the truth.

    Under noise the least-squares optimum differs from the generating coefficients, so compare a
    trained model with the exact least-squares answer too (the run report prints both).
    """

    def __init__(
        self,
        n_samples: int = 100,
        n_features: int = 1,
        n_informative: int | None = None,
        n_targets: int = 1,
        bias: float = 0.0,
        noise: float = 0.0,
        random_state: int | None = 0,
    ) -> None:
        for name, value in (("n_samples", n_samples), ("n_features", n_features), ("n_targets", n_targets)):
            if value < 1:
                raise InputError(f"{name}={value} must be a positive integer.")
        if noise < 0:
            raise InputError(f"noise={noise} must be >= 0 (it is a standard deviation).")
        self.kwargs = dict(
            n_samples=n_samples,
            n_features=n_features,
            n_informative=n_features if n_informative is None else n_informative,
            n_targets=n_targets,
            bias=bias,
            noise=noise,
            random_state=random_state,
        )

    def load(self) -> Table:
        from sklearn.datasets import make_regression

        x, y, coef = make_regression(coef=True, **self.kwargs)
        # make_regression returns y of shape (n,) for one target: keep targets 2-D everywhere.
        y = y.reshape(len(y), -1)
        weight = np.asarray(coef, dtype=np.float64).reshape(x.shape[1], -1).T
        n_targets = y.shape[1]
        return Table(
            name="make_regression",
            x=x.astype(np.float64),
            y=y.astype(np.float64),
            feature_names=[f"x{i}" for i in range(x.shape[1])],
            target_names=[f"y{i}" for i in range(n_targets)] if n_targets > 1 else ["y"],
            true_weight=weight,
            true_bias=np.full(n_targets, float(self.kwargs["bias"])),
        )


class SklearnDataset(DataSource):
    """A regression set bundled with scikit-learn (offline): ``diabetes``, or ``linnerud``
    (three targets: Weight, Waist, Pulse)."""

    standardize_by_default = True

    def __init__(self, name: Literal["diabetes", "linnerud"] = "diabetes") -> None:
        if name not in ("diabetes", "linnerud"):
            raise InputError(f"name={name!r} is not a bundled dataset; use 'diabetes' or 'linnerud'.")
        self.name = name

    def load(self) -> Table:
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{self.name}")()
        y = np.asarray(bunch.target, dtype=np.float64)
        y = y.reshape(len(y), -1)
        target_names = list(getattr(bunch, "target_names", None) or ["target"])
        return Table(
            name=self.name,
            x=np.asarray(bunch.data, dtype=np.float64),
            y=y,
            feature_names=[str(n) for n in bunch.feature_names],
            target_names=[str(n) for n in target_names],
        )


class CSVSource(DataSource):
    r"""A CSV file with a header row: one or more target columns, every other column (or the
    listed ones) as features.

    Parameters
    ----------
    path : str
        The CSV file (UTF-8, with or without BOM; any line endings; quoted fields allowed; '#'
        comment lines before the header are skipped). A relative path in a config file is
        resolved against that file's folder.
    target : str or list of str
        The target column name(s).
    features : list of str, optional
        Feature columns; default: every column that is not a target.
    drop_missing : bool
        Drop rows with missing values in the used columns instead of stopping with an error.
    delimiter : str, optional
        The field separator (one character; ``\t`` or ``tab`` for tabs). Default: detected among
        ',', ';', tab and '|' from the first lines.
    decimal : {".", ","}, optional
        The decimal mark. Default: ',' when the file is not comma-separated and its numbers are
        written with decimal commas (as European spreadsheets save them), else '.'.
    """

    standardize_by_default = True

    def __init__(
        self,
        path: Path_fr | str,
        target: str | list[str],
        features: list[str] | None = None,
        drop_missing: bool = False,
        delimiter: str | None = None,
        decimal: Literal[".", ","] | None = None,
    ) -> None:
        self.path = Path(os.fspath(path)).expanduser()
        self.targets = [target] if isinstance(target, str) else list(target)
        if not self.targets:
            raise InputError("target=[] is empty: name at least one target column.")
        self.features = None if features is None else list(features)
        self.drop_missing = drop_missing
        self.delimiter = _checked_delimiter(delimiter)
        if decimal not in (None, ".", ","):
            raise InputError(f"decimal={decimal!r} must be '.' or ','.")
        self.decimal = decimal

    def config(self) -> dict:
        config = super().config()
        config["init_args"]["path"] = str(self.path.resolve())
        return config

    def load(self) -> Table:
        frame = read_csv(self.path, self.delimiter, self.decimal)
        columns = list(frame.columns)
        for name in self.targets + (self.features or []):
            if name not in columns:
                raise InputError(_unknown_column_message(name, columns, self.path) + _one_column_hint(frame))
        features = self.features if self.features is not None else [c for c in columns if c not in self.targets]
        if overlap := sorted(set(features) & set(self.targets)):
            raise InputError(f"columns {overlap} are given both as features and as target; list each once.")
        if not features:
            raise InputError(
                f"CSV file '{self.path}' has no feature column besides the target {self.targets}."
                + _one_column_hint(frame)
            )
        _check_not_empty(frame, features, self.targets, self.path)
        used = numeric_columns(frame, features + self.targets, self.path, self.drop_missing)
        return Table(
            name=self.path.stem,
            x=used[features].to_numpy(dtype=np.float64),
            y=used[self.targets].to_numpy(dtype=np.float64),
            feature_names=features,
            target_names=self.targets,
        )


@dataclass(frozen=True)
class CSVLayout:
    """How a CSV file is written: what ``read_csv`` tells pandas.

    ``skip_lines`` counts the '#' comment lines and blank lines above the header.
    """

    delimiter: str = ","
    decimal: str = "."
    skip_lines: int = 0


# Field separators tried in this order; the first wins a tie, so plain CSV stays plain.
DELIMITERS = (",", ";", "\t", "|")
# Enough lines to see the layout; the whole file is then read by pandas' fast C parser.
SAMPLE_BYTES, SAMPLE_LINES = 1 << 16, 200
_DOT_NUMBER = re.compile(r"[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?")
_COMMA_NUMBER = re.compile(r"[+-]?(\d+,\d*|,\d+)([eE][+-]?\d+)?")
_NUMBER = re.compile(r"[+-]?(\d+[.,]?\d*|[.,]\d+)([eE][+-]?\d+)?|(?i:[+-]?(nan|inf|infinity))")


def sniff_layout(sample: str, delimiter: str | None = None, decimal: str | None = None) -> CSVLayout:
    r"""The layout of a CSV file from its first lines; a given delimiter or decimal mark is kept.

    The delimiter is the candidate that splits the most lines into as many fields as the header
    (at least two), then the one that leaves the most fields numeric. Numbers written only with
    decimal commas in a file not separated by commas mean a decimal comma.

    Examples
    --------
    >>> sniff_layout("# exported 2024-01-01\na;b;y\n1,5;2;3,25\n")
    CSVLayout(delimiter=';', decimal=',', skip_lines=1)
    >>> sniff_layout("a\tb\n1.5\t2\n"), sniff_layout("a,b\n1.5,2\n")
    (CSVLayout(delimiter='\t', decimal='.', skip_lines=0), CSVLayout(delimiter=',', decimal='.', skip_lines=0))
    """
    lines = re.split(r"\r\n|\r|\n", sample)
    skip = 0
    while skip < len(lines) and (not lines[skip].strip() or lines[skip].lstrip().startswith("#")):
        skip += 1
    body = [line for line in lines[skip : skip + SAMPLE_LINES] if line.strip()]
    if delimiter is None:
        delimiter = max(DELIMITERS, key=lambda d: _delimiter_score(body, d)) if body else ","
    if decimal is None:
        fields = [f.strip() for row in csv.reader(body[1:], delimiter=delimiter) for f in row]
        comma_numbers = delimiter != "," and any(_COMMA_NUMBER.fullmatch(f) for f in fields)
        decimal = "," if comma_numbers and not any(_DOT_NUMBER.fullmatch(f) for f in fields) else "."
    return CSVLayout(delimiter, decimal, skip)


def read_csv(path: Path, delimiter: str | None = None, decimal: str | None = None):
    """A CSV file with a header row and at least one data row, as a pandas DataFrame.

    The delimiter, the decimal mark and comment lines above the header are found by
    ``sniff_layout`` unless given; what detection changed is said in one line on stderr.
    """
    import pandas as pd

    if not path.is_file():
        raise InputError(f"CSV file not found: '{path}'; check the path given to --data.source.path.")
    try:
        with path.open("rb") as file:
            head = file.read(SAMPLE_BYTES)
        if len(head) == SAMPLE_BYTES and b"\n" in head:
            head = head[: head.rindex(b"\n")]  # whole lines only (never inside a UTF-8 character)
        sample = head.decode("utf-8-sig")
        layout = sniff_layout(sample, delimiter, decimal)
        with warnings.catch_warnings():
            # pandas warns, and drops data, when a row has more fields than the header.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                path,
                sep=layout.delimiter,
                decimal=layout.decimal,
                skiprows=layout.skip_lines,
                encoding="utf-8-sig",
                skipinitialspace=True,
                index_col=False,  # never take the first column for an index
            )
    except pd.errors.EmptyDataError:
        raise InputError(f"CSV file '{path}' is empty: it needs a header row and data rows.") from None
    except UnicodeDecodeError as error:
        raise InputError(f"CSV file '{path}' could not be parsed ({error}); save it as UTF-8 CSV.") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning) as error:
        raise InputError(
            f"CSV file '{path}' does not split into its header's columns at {layout.delimiter!r} ({error}); "
            "quote fields that contain the separator, or pass the separator with --data.source.delimiter."
        ) from None
    _say_what_was_detected(path, layout, delimiter, decimal)
    frame.columns = [str(c).strip() for c in frame.columns]
    # pandas renames a repeated name 'a' to 'a.1' and calls a nameless column 'Unnamed: 3': names the
    # user never wrote. Refuse those, except nameless empty columns (a delimiter ending every line).
    header = _header_names(sample, layout)
    if len(header) == len(frame.columns):
        nameless = [i for i, name in enumerate(header) if not name]
        if unnamed_with_values := [i + 1 for i in nameless if frame.iloc[:, i].notna().any()]:
            raise InputError(
                f"column(s) {unnamed_with_values} of '{path}' hold values but have no name in the header; name them."
            )
        if nameless:
            frame = frame.drop(columns=frame.columns[nameless])
    if duplicated := sorted({name for name in header if name and header.count(name) > 1}):
        raise InputError(
            f"the header of '{path}' names column(s) {duplicated} more than once; give each column a unique name."
        )
    if frame.empty:
        raise InputError(f"CSV file '{path}' has a header but no data rows.")
    return frame


def numeric_columns(frame, names: list[str], path: Path, drop_missing: bool = False, for_training: bool = True):
    """The named columns, checked to be present, numeric and complete (or with such rows dropped).

    ``for_training`` adds the training options that work around a bad column to the messages.
    """
    import pandas as pd

    columns = list(frame.columns)
    if missing_columns := [name for name in names if name not in columns]:
        raise InputError(_unknown_column_message(missing_columns[0], columns, path))
    used = frame[names]
    for name in used.columns:
        if not pd.api.types.is_numeric_dtype(used[name]):
            bad = used[name][pd.to_numeric(used[name], errors="coerce").isna() & used[name].notna()]
            example = bad.iloc[0]
            # A quoted "1,5" in a comma-separated file: the decimal comma is not guessed there ("1,234"?).
            hint = " (a decimal comma? pass --data.source.decimal ',')" if _COMMA_NUMBER.fullmatch(str(example)) else ""
            raise InputError(
                f"column '{name}' in '{path}' is not numeric (e.g. {example!r} on data row "
                f"{bad.index[0] + 1}{hint}); convert it to numbers"
                + (" or leave it out with --data.source.features." if for_training else ".")
            )
    missing = used.isna().sum()
    if missing.any():
        counts = ", ".join(f"'{c}': {n}" for c, n in missing.items() if n)
        if not drop_missing:
            raise InputError(
                f"'{path}' has missing values ({counts}); fill them in"
                + (", or pass --data.source.drop_missing true to drop those rows." if for_training else ".")
            )
        used = used.dropna()
        if used.empty:
            raise InputError(
                f"every row of '{path}' has a missing value in a used column (missing of {len(frame)} rows: {counts}); "
                "leave the emptiest column(s) out with --data.source.features, or fill them in."
            )
    return used


def _check_not_empty(frame, features: list[str], targets: list[str], path: Path) -> None:
    """Name the columns without a single value: dropping incomplete rows would drop every row."""
    if empty := [name for name in targets if frame[name].isna().all()]:
        raise InputError(
            f"target column(s) {empty} in '{path}' have no values (every cell is empty); "
            "fill them in or choose another --data.source.target."
        )
    if empty := [name for name in features if frame[name].isna().all()]:
        kept = [name for name in features if name not in empty]
        fix = f"leave them out with --data.source.features '{json.dumps(kept)}'" if kept else "fill them in"
        raise InputError(f"feature column(s) {empty} in '{path}' have no values (every cell is empty); {fix}.")


def _delimiter_score(lines: list[str], delimiter: str) -> tuple[int, int]:
    """(lines with as many fields as the header, numeric fields), or (0, 0) below two fields."""
    rows = list(csv.reader(lines, delimiter=delimiter, skipinitialspace=True))
    width = len(rows[0])
    if width < 2:
        return 0, 0
    numeric = sum(bool(_NUMBER.fullmatch(field.strip())) for row in rows[1:] for field in row)
    return sum(len(row) == width for row in rows), numeric


def _header_names(sample: str, layout: CSVLayout) -> list[str]:
    """The header's names as written (pandas renames repeated ones)."""
    lines = re.split(r"\r\n|\r|\n", sample)[layout.skip_lines :]
    rows = csv.reader([line for line in lines if line.strip()], delimiter=layout.delimiter, skipinitialspace=True)
    return [name.strip() for name in next(rows, [])]


def _checked_delimiter(delimiter: str | None) -> str | None:
    r"""One character that can separate fields; the two-character spelling ``\t`` means a tab."""
    if delimiter is None:
        return None
    delimiter = {"\\t": "\t", "tab": "\t"}.get(delimiter, delimiter)
    if len(delimiter) != 1 or delimiter in '"\r\n' or delimiter.isalnum() or delimiter in ".-+":
        raise InputError(
            f"delimiter={delimiter!r} must be one character that is not a letter, digit, sign, point or quote, "
            "e.g. ',', ';', '|' or '\\t' (tab)."
        )
    return delimiter


def _one_column_hint(frame) -> str:
    if len(frame.columns) != 1:
        return ""
    return (
        " The file was read as this one column: if its fields are separated by another character, "
        "pass it with --data.source.delimiter (e.g. ';', '|' or '\\t')."
    )


@rank_zero_only
def _say_what_was_detected(path: Path, layout: CSVLayout, delimiter: str | None, decimal: str | None) -> None:
    """One line on stderr when the file was not read as plain comma-separated values."""
    changes = []
    if delimiter is None and layout.delimiter != ",":
        changes.append(f"as {layout.delimiter!r}-separated")
    if decimal is None and layout.decimal == ",":
        changes.append("with decimal commas")
    if layout.skip_lines:
        changes.append(f"skipping {layout.skip_lines} comment or blank line(s) above the header")
    if changes:
        print(f"read '{path}' {' '.join(changes)}", file=sys.stderr)


def _plain(value):
    """A value a weights_only checkpoint can hold: no arrays or path objects."""
    if isinstance(value, os.PathLike):
        return str(Path(os.fspath(value)).resolve())
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _unknown_column_message(name: str, columns: list[str], path: Path) -> str:
    hint = ""
    if same_but_case := [c for c in columns if c.lower() == name.lower()]:
        hint = f" Column names are case-sensitive: did you mean '{same_but_case[0]}'?"
    elif close := difflib.get_close_matches(name, columns, n=1):
        hint = f" Did you mean '{close[0]}'?"
    return f"column '{name}' is not in '{path}'; its columns are {columns}.{hint}"


def _as_rows(values, name: str) -> np.ndarray:
    """A list of numbers (one column) or a list of equal-length lists, as a 2-D float array."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name}={values!r} must be a list of numbers or of equal-length lists of numbers.") from None
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.size == 0:
        raise InputError(f"{name}={values!r} must be a non-empty list of numbers or of equal-length lists.")
    if not np.isfinite(array).all():
        raise InputError(f"{name}={values!r} holds a NaN or infinite value; give finite numbers.")
    return array


def _as_matrix(weight, name: str) -> np.ndarray:
    """Weights as (n_targets, n_features): a flat list is one target's weights."""
    matrix = _as_rows(weight, name)
    return matrix.T if np.ndim(weight) == 1 else matrix
