"""Categorical feature columns: treatment (dummy) coding, as statsmodels' ``C()`` does by default.

A source reads a categorical column as each row's index into the column's sorted levels
(``Table.levels``). The data module keeps the levels that occur in the training rows
(``Encoding.fit``): the first in sorted order is the reference, and every other level becomes one
0/1 column named as statsmodels names it, ``firm[T.IBM]``. The encoding travels in the checkpoint
as plain values (``Encoding.config``), so that evaluation and prediction apply it to other files
by column name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from linreg_pl.data.sources import Table
from linreg_pl.errors import InputError

UnseenLevels = Literal["error", "reference"]
UNSEEN_LEVELS = ("error", "reference")


@dataclass(frozen=True)
class Encoding:
    """How the feature columns as read become the model's inputs.

    ``columns`` are the feature columns as read, in order; ``levels`` maps each categorical one to
    its training levels in sorted order (plain ``str``, ``int`` or ``float`` values).

    Examples
    --------
    >>> import pandas as pd
    >>> encoding = Encoding(["value", "firm"], {"firm": ["GE", "GM", "IBM"]})
    >>> encoding.feature_names
    ['value', 'firm[T.GM]', 'firm[T.IBM]']
    >>> encoding.design(pd.DataFrame({"firm": ["IBM", "GE"], "value": [1.5, 2.0]}), Path("new.csv")).tolist()
    [[1.5, 0.0, 1.0], [2.0, 0.0, 0.0]]
    """

    columns: list[str]
    levels: dict[str, list]

    @classmethod
    def fit(cls, table: Table, rows: np.ndarray) -> Encoding:
        """The levels of ``table``'s categorical columns that occur in ``rows`` (the training split)."""
        levels = {}
        for name, all_levels in (table.levels or {}).items():
            present = np.unique(table.x[rows, table.feature_names.index(name)]).astype(np.int64)
            levels[name] = [all_levels[k] for k in present]
        return cls(list(table.feature_names), levels)

    @classmethod
    def from_config(cls, config: dict) -> Encoding:
        return cls(list(config["columns"]), {name: list(values) for name, values in config["levels"].items()})

    def config(self) -> dict:
        """Plain values, for hyper-parameters and checkpoints."""
        return {"columns": list(self.columns), "levels": {name: list(values) for name, values in self.levels.items()}}

    @property
    def feature_names(self) -> list[str]:
        """The model's input columns: numeric columns as they are, each categorical one as its
        non-reference levels ``column[T.level]``."""
        names = []
        for name in self.columns:
            names += [f"{name}[T.{level}]" for level in self.levels[name][1:]] if name in self.levels else [name]
        return names

    def expand(self, table: Table, unseen_levels: UnseenLevels = "error") -> Table:
        """``table`` with its categorical columns (codes into ``table.levels``) as dummy columns."""
        if list(table.feature_names) != self.columns:
            raise InputError(
                f"the data has feature columns {table.feature_names} but the model was trained on {self.columns}; "
                "select them in that order with --data.source.features."
            )
        file_levels = table.levels or {}
        if numeric := [name for name in self.levels if name not in file_levels]:
            raise InputError(
                f"column(s) {numeric} were categorical in training but are read as numbers here; mark them "
                f"categorical with --data.source.categorical '{numeric}'."
            )
        if categorical := [name for name in file_levels if name not in self.levels]:
            raise InputError(
                f"column(s) {categorical} were numeric in training but are read as categorical here "
                "(a text value?); convert them to numbers."
            )
        blocks = []
        for j, name in enumerate(self.columns):
            if name not in self.levels:
                blocks.append(table.x[:, [j]])
                continue
            # Each of the file's levels as its index into the training levels (-1: unseen).
            position = {level: k for k, level in enumerate(self.levels[name])}
            to_training = np.array([position.get(level, -1) for level in file_levels[name]], dtype=np.int64)
            codes = to_training[table.x[:, j].astype(np.int64)]
            blocks.append(
                self._dummies(name, codes, file_levels[name], table.x[:, j], unseen_levels, f"dataset '{table.name}'")
            )
        return replace(table, x=np.hstack(blocks), feature_names=self.feature_names, levels=None)

    def design(self, frame, path: Path, unseen_levels: UnseenLevels = "error") -> np.ndarray:
        """The model's inputs (n, d) for a pandas DataFrame holding the feature columns by name."""
        from linreg_pl.data.csv import numeric_columns, unknown_column_message

        if missing := [name for name in self.columns if name not in frame.columns]:
            raise InputError(unknown_column_message(missing[0], list(frame.columns), path))
        numeric = numeric_columns(frame, [c for c in self.columns if c not in self.levels], path, for_training=False)
        blocks = []
        for name in self.columns:
            if name not in self.levels:
                blocks.append(numeric[[name]].to_numpy(np.float64))
                continue
            values = frame[name]
            if values.isna().any():
                raise InputError(
                    f"'{path}' has {int(values.isna().sum())} missing value(s) in column '{name}'; fill them in."
                )
            blocks.append(self.dummies(name, values.to_numpy(), unseen_levels, f"'{path}'"))
        return np.hstack(blocks)

    def dummies(self, name: str, values: np.ndarray, unseen_levels: UnseenLevels, where: str) -> np.ndarray:
        """The 0/1 columns (m, levels - 1) of categorical column ``name`` for its values (m,)."""
        import pandas as pd

        codes = pd.Index(self.levels[name]).get_indexer(values).astype(np.int64)  # -1: unseen
        return self._dummies(name, codes, values, np.arange(len(values)), unseen_levels, where)

    def _dummies(self, name, codes, values, value_index, unseen_levels: UnseenLevels, where: str) -> np.ndarray:
        """One 0/1 column per non-reference level; ``codes`` index the training levels, -1 for a
        level unseen in training (whose value is ``values[value_index[row]]``)."""
        if unseen_levels not in UNSEEN_LEVELS:
            raise InputError(f"unseen_levels={unseen_levels!r} must be one of {list(UNSEEN_LEVELS)}.")
        unseen = codes < 0
        if unseen.any():
            if unseen_levels == "error":
                level = values[int(value_index[np.flatnonzero(unseen)[0]])]
                raise InputError(
                    f"column '{name}' has level {level!r} (in {where}) that the training rows do not have "
                    f"(they have {self.levels[name]}); drop those rows, or pass unseen_levels 'reference' "
                    f"(--data.source.unseen_levels, predict's --unseen_levels) to treat them as the reference "
                    f"level {self.levels[name][0]!r}."
                )
            codes = np.where(unseen, 0, codes)
        return (codes[:, None] == np.arange(1, len(self.levels[name]))[None, :]).astype(np.float64)


def read_categorical(frame, features: list[str], categorical: list[str] | None, max_levels: int, path: Path):
    """``frame`` with its categorical feature columns (text columns, and the listed ones) replaced
    by each row's index into the column's sorted levels (NaN where missing), and those levels.
    A column with more than ``max_levels`` levels is refused: an identifier, most likely.

    Examples
    --------
    >>> import pandas as pd
    >>> given = pd.DataFrame({"g": ["b", "a", None], "x": [1, 2, 3]})
    >>> frame, levels = read_categorical(given, ["g", "x"], None, 10, Path("f.csv"))
    >>> frame["g"].tolist(), levels
    ([1.0, 0.0, nan], {'g': ['a', 'b']})
    """
    import pandas as pd

    marked = list(categorical or [])
    if unknown := [name for name in marked if name not in features]:
        raise InputError(
            f"categorical={unknown} names column(s) that are not features (features: {features}); "
            "list feature columns only."
        )
    names = [c for c in features if c in marked or not pd.api.types.is_numeric_dtype(frame[c])]
    if not names:
        return frame, {}
    frame = frame.copy()
    levels = {}
    for name in names:
        codes, uniques = pd.factorize(frame[name], sort=True)
        frame[name] = np.where(codes < 0, np.nan, codes.astype(np.float64))
        levels[name] = [_plain_level(level) for level in uniques]
        check_level_count(name, len(levels[name]), max_levels, path)
    return frame, levels


def _plain_level(level):
    """A level as a plain Python value (hyper-parameters hold no NumPy scalars)."""
    return level.item() if isinstance(level, np.generic) else level


def check_level_count(name: str, count: int, max_levels: int, path) -> None:
    if count > max_levels:
        raise InputError(
            f"categorical column '{name}' in '{path}' has {count} levels, more than max_levels={max_levels} "
            "(an identifier?); leave it out with --data.source.features, or raise --data.source.max_levels."
        )
