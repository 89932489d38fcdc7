"""CSV files as a data source: layout detection (delimiter, decimal mark), reading with pandas'
C parser, and validation of the columns with messages that name the file, the column and the fix.
"""

from __future__ import annotations

import csv
import difflib
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

from linreg_pl.data.encoding import UnseenLevels, read_categorical
from linreg_pl.data.sources import DataSource, Table, checked_weights
from linreg_pl.errors import InputError


class CSVSource(DataSource):
    r"""A CSV file with a header row: one or more target columns, every other column (or the
    listed ones) as features. A feature column that is not numeric is categorical (treatment
    coding, ``linreg_pl.data.encoding``).

    Parameters
    ----------
    path : str
        The CSV file (UTF-8, with or without BOM; any line endings; quoted fields allowed; '#'
        comment lines before the header are skipped). A relative path in a config file is
        resolved against that file's folder.
    target : str or list of str
        The target column name(s).
    features : list of str, optional
        Feature columns; default: every column that is not a target or the weight.
    categorical : list of str, optional
        Numeric feature columns to treat as categorical too (codes such as a year or a region
        number); text columns always are. Each becomes one 0/1 column per level that the training
        rows hold, except the first in sorted order (the reference), named ``column[T.level]``.
    max_levels : int
        The most levels a categorical column may have (more usually means an identifier column).
    unseen_levels : {"error", "reference"}
        A validation or test row (or, at evaluation, any row) whose level the training rows lack:
        stop with an error naming it, or treat it as the reference level.
    weight : str, optional
        A column of row weights (finite, >= 0, not all 0): the loss, the metrics, the exact
        solution and its inference become weighted least squares (statsmodels' WLS).
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
        categorical: list[str] | None = None,
        max_levels: int = 1000,
        unseen_levels: UnseenLevels = "error",
        weight: str | None = None,
        drop_missing: bool = False,
        delimiter: str | None = None,
        decimal: Literal[".", ","] | None = None,
    ) -> None:
        self.path = Path(os.fspath(path)).expanduser()
        try:
            self.path.resolve()
        except (OSError, RuntimeError):  # RuntimeError: Python 3.11's pathlib on a symlink loop
            raise InputError(f"data.source.path='{path}' is a loop of symbolic links; give the file itself.") from None
        self.targets = [target] if isinstance(target, str) else list(target)
        if not self.targets:
            raise InputError("target=[] is empty: name at least one target column.")
        self.features = None if features is None else list(features)
        self.categorical = None if categorical is None else list(categorical)
        if max_levels < 2:
            raise InputError(f"max_levels={max_levels} must be >= 2 (a categorical column needs two levels to matter).")
        if unseen_levels not in ("error", "reference"):
            raise InputError(f"unseen_levels={unseen_levels!r} must be 'error' or 'reference'.")
        self.max_levels, self.unseen_levels, self.weight = max_levels, unseen_levels, weight
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
        weights = [self.weight] if self.weight is not None else []
        for name in self.targets + (self.features or []) + weights:
            if name not in columns:
                raise InputError(unknown_column_message(name, columns, self.path) + _one_column_hint(frame))
        not_features = self.targets + weights
        features = self.features if self.features is not None else [c for c in columns if c not in not_features]
        if overlap := sorted(set(features) & set(self.targets)):
            raise InputError(f"columns {overlap} are given both as features and as target; list each once.")
        if self.weight in features + self.targets:
            raise InputError(f"weight={self.weight!r} is also a feature or target column; a column has one role.")
        if not features:
            raise InputError(
                f"CSV file '{self.path}' has no feature column besides the target {self.targets}."
                + _one_column_hint(frame)
            )
        _check_not_empty(frame, features, self.targets, self.path)
        for name in features:
            if name not in (self.categorical or []) and _numbers_among_text(frame[name]):
                # Numbers mixed with text ('n/a', a typo) or decimal commas: a broken numeric column, not levels.
                try:
                    numeric_columns(frame, [name], self.path)
                except InputError as error:
                    raise InputError(
                        f"{error} If its values are levels rather than numbers, pass --data.source.categorical "
                        f"\"['{name}']\"."
                    ) from None
        frame, levels = read_categorical(frame, features, self.categorical, self.max_levels, self.path)
        used = numeric_columns(frame, features + self.targets + weights, self.path, self.drop_missing)
        return Table(
            name=self.path.stem,
            x=used[features].to_numpy(dtype=np.float64),
            y=used[self.targets].to_numpy(dtype=np.float64),
            feature_names=features,
            target_names=self.targets,
            levels=levels or None,
            weight=checked_weights(used[self.weight], f"weight column '{self.weight}'") if self.weight else None,
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


def read_csv(
    path: Path,
    delimiter: str | None = None,
    decimal: str | None = None,
    option: str = "--data.source.path",
    as_text: bool = False,
):
    """A CSV file with a header row and at least one data row, as a pandas DataFrame.

    The delimiter, the decimal mark and comment lines above the header are found by
    ``sniff_layout`` unless given; what detection changed is said in one line on stderr.
    ``option`` is the one that gave the path (named in errors); ``as_text`` keeps every field as
    the text in the file (``147.7`` stays ``147.7``, an empty field stays empty).
    """
    import pandas as pd

    if not path.is_file():
        raise InputError(f"CSV file not found: '{path}'; check the path given to {option}.")
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
                **({"dtype": str, "keep_default_na": False} if as_text else {}),
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
        raise InputError(unknown_column_message(missing_columns[0], columns, path))
    used = frame[names]
    for name in used.columns:
        if not pd.api.types.is_numeric_dtype(used[name]):
            bad = used[name][pd.to_numeric(used[name], errors="coerce").isna() & used[name].notna()]
            example = bad.iloc[0]
            # A quoted "1,5" in a comma-separated file: the decimal comma is not guessed there ("1,234"?).
            hint = " (a decimal comma? pass --data.source.decimal ',')" if _COMMA_NUMBER.fullmatch(str(example)) else ""
            raise InputError(
                f"column '{name}' in '{path}' is not numeric (e.g. {example!r} on data row "
                f"{bad.index[0] + 1}{hint}); convert it to numbers."
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


def _numbers_among_text(column) -> bool:
    """A text column some of whose values are numbers (or numbers with a decimal comma)."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column):
        return False
    values = column.dropna().astype(str).str.strip()
    return bool(pd.to_numeric(values, errors="coerce").notna().any() or values.str.fullmatch(_COMMA_NUMBER).any())


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


def unknown_column_message(name: str, columns: list[str], path: Path) -> str:
    hint = ""
    if same_but_case := [c for c in columns if c.lower() == name.lower()]:
        hint = f" Column names are case-sensitive: did you mean '{same_but_case[0]}'?"
    elif close := difflib.get_close_matches(name, columns, n=1):
        hint = f" Did you mean '{close[0]}'?"
    return f"column '{name}' is not in '{path}'; its columns are {columns}.{hint}"
