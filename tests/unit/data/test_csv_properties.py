"""Generated CSV files through the CSV source and the data module: valid data or one InputError.

Files vary in delimiter, decimal mark, quoting, line endings, BOM, comment lines, missing and
non-numeric cells, huge and tiny magnitudes, constant and repeated columns and 0-20 rows. A few
fixed representative files are then trained on end to end.
"""

import csv
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from linreg_pl import CSVSource, InputError, RegressionDataModule
from tests.helpers import CONFIGS, lstsq_with_intercept

FEATURE_NAMES = ["a", "b", "rooms, total", "p;q"]
# Beyond float32's squares (3e19, 1e39), float64's (1e300, the largest float) and below both.
SPECIAL = [3e19, 1e39, -1e-30, 1e-320, 5e-324, -1e300, 1.7976931348623157e308, 0.0, -0.0]
NUMBERS = st.one_of(st.floats(-1e6, 1e6).map(lambda v: round(v, 6)), st.integers(-1000, 1000).map(float))


@st.composite
def cells(draw):
    """One cell of a hostile column: a float, None for a missing cell, or text written as is."""
    kind = draw(st.sampled_from(["number", "number", "number", "special", "missing", "text"]))
    if kind == "number":
        return draw(NUMBERS)
    if kind == "special":
        return draw(st.one_of(st.sampled_from(SPECIAL), st.floats(allow_nan=False, allow_infinity=False)))
    if kind == "missing":
        return None
    return draw(st.sampled_from(["x", "nan", "inf", "1.2.3", "#"]))  # text, and what pandas reads as NaN or inf


@st.composite
def csv_files(draw) -> dict:
    """A CSV text and the cells it was written from; most columns are clean, so valid files are common."""
    # (Hypothesis favours the first of a sampled list and small numbers: the benign choice comes first.)
    names = draw(st.lists(st.sampled_from(FEATURE_NAMES), unique=True, min_size=1, max_size=3))
    names += draw(st.sampled_from([["y"]] * 14 + [[], ["y", "y"]]))
    if draw(st.sampled_from([False] * 15 + [True])):
        names.append(draw(st.sampled_from(names)))  # a repeated name
    names = draw(st.permutations(names))
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    decimal = draw(st.sampled_from([".", ","])) if delimiter != "," else "."
    n_rows = draw(st.sampled_from([6, 8, 20, 0, 1, 2, 3, 4]))
    columns, kinds = (
        [],
        draw(
            st.lists(
                st.sampled_from(["clean"] * 6 + ["outlier", "constant", "hostile"]),
                min_size=len(names),
                max_size=len(names),
            )
        ),
    )
    for kind in kinds:
        if kind == "constant":
            columns.append([draw(cells())] * n_rows)
        elif kind == "clean":  # distinct ordinary numbers: never constant, never out of range
            columns.append(draw(st.lists(NUMBERS, min_size=n_rows, max_size=n_rows, unique=True)))
        elif kind == "outlier":  # ordinary numbers but one huge or tiny one
            column = draw(st.lists(NUMBERS, min_size=n_rows, max_size=n_rows, unique=True))
            if column:
                column[draw(st.integers(0, n_rows - 1))] = draw(st.sampled_from(SPECIAL))
            columns.append(column)
        else:
            columns.append(draw(st.lists(cells(), min_size=n_rows, max_size=n_rows)))
    rows = [list(row) for row in zip(*columns, strict=True)] if columns else []
    text = io.StringIO()
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    writer = csv.writer(text, delimiter=delimiter, quoting=quoting, lineterminator=newline)
    writer.writerow(names)
    for row in rows:
        writer.writerow(["" if v is None else v if isinstance(v, str) else repr(v).replace(".", decimal) for v in row])
    comment = "# generated" + newline if draw(st.booleans()) else ""
    return {
        "text": comment + text.getvalue(),
        "bom": draw(st.booleans()),
        "names": names,
        "rows": rows,
        "delimiter": delimiter,
        "decimal": decimal,
        "give_layout": draw(st.booleans()),
        "drop_missing": draw(st.booleans()),
        "fractions": draw(st.sampled_from([(0.0, 0.0), (0.1, 0.1), (0.34, 0.0)])),
        # A file any spreadsheet user would call fine: it must load, whatever its layout.
        "clean": set(kinds) == {"clean"} and sorted(set(names)) == sorted(names) and "y" in names and n_rows >= 6,
    }


def _is_text_column(cells: list) -> bool:
    """Text in some cell and no number in any (missing cells aside): a categorical column."""

    def is_number(cell) -> bool:
        try:
            float(cell)
        except (TypeError, ValueError):
            return False
        return True

    present = [cell for cell in cells if cell is not None]
    return any(isinstance(cell, str) and not is_number(cell) for cell in present) and not any(
        is_number(cell) for cell in present
    )


@settings(max_examples=150, deadline=None, derandomize=True)
@given(csv_files())
@pytest.mark.slow
def test_every_generated_csv_gives_valid_data_or_one_input_error(case):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "generated.csv"
        path.write_bytes(("\ufeff" if case["bom"] else "").encode() + case["text"].encode())
        layout = {"delimiter": case["delimiter"], "decimal": case["decimal"]} if case["give_layout"] else {}
        val_fraction, test_fraction = case["fractions"]
        try:
            source = CSVSource(str(path), target="y", drop_missing=case["drop_missing"], **layout)
            dm = RegressionDataModule(source, val_fraction=val_fraction, test_fraction=test_fraction, batch_size=2)
            dm.setup("fit")  # no Trainer: the float32 range check
            batches = list(dm.train_dataloader())
        except InputError:
            if case["clean"] and len(case["names"]) > 1:
                raise
            return
    names, rows = case["names"], case["rows"]
    features = [name for name in names if name != "y"]
    text_only = [name for name in features if _is_text_column([row[names.index(name)] for row in rows])]
    if text_only:  # a text column is categorical: its coding is tests/unit/data/test_encoding.py's to check
        assert [name for name in dm.feature_names if "[T." not in name] == [n for n in features if n not in text_only]
        return
    expected = np.array(
        [
            [row[names.index(n)] for n in features + ["y"]]
            for row in rows
            if not case["drop_missing"] or None not in row
        ],
        dtype=object,
    )
    # What loaded is exactly what was written, in float64, with the written names and shapes.
    assert names.count("y") == 1 and len(set(names)) == len(names)
    assert dm.feature_names == features and dm.target_names == ["y"]
    table = dm.table
    assert table.x.dtype == table.y.dtype == np.float64
    assert np.isfinite(table.x).all() and np.isfinite(table.y).all()
    assert not any(isinstance(v, str) for v in expected.ravel())  # text never passes as a number
    if not case["drop_missing"]:
        np.testing.assert_allclose(table.x, expected[:, :-1].astype(float), rtol=1e-15, atol=1e-300)
        np.testing.assert_allclose(table.y, expected[:, -1:].astype(float), rtol=1e-15, atol=1e-300)
    assert sum(dm.split_sizes.values()) == len(table.x) and dm.split_sizes["train"] >= 1
    # The range check promised float32 can hold them: every batch is finite.
    for x, y in batches:
        assert x.dtype == y.dtype == torch.float32
        assert x.shape[1] == len(features) and y.shape[1] == 1
        assert torch.isfinite(x).all() and torch.isfinite(y).all()
        assert torch.isfinite(y.square().sum())


def house_rows(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, size=(n, 2))
    y = x @ [2.0, -3.0] + 1.0 + rng.normal(scale=0.1, size=n)
    return x, y


def write_rows(path: Path, x: np.ndarray, y: np.ndarray, delimiter: str, decimal: str, header: str = "") -> Path:
    lines = [header + delimiter.join(['"rooms, total"', "age", "y"])]
    for row in np.column_stack([x, y]):
        lines.append(delimiter.join(repr(float(v)).replace(".", decimal) for v in row))
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode())
    return path


@pytest.mark.parametrize(
    "delimiter, decimal, header",
    [(";", ",", "# exported from a spreadsheet\r\n"), ("\t", ".", ""), ("|", ".", "\r\n# note\r\n")],
    ids=["semicolon-decimal-comma-comment", "tab", "pipe-comment"],
)
@pytest.mark.slow
def test_representative_generated_files_train_to_the_least_squares_answer(train_run, delimiter, decimal, header):
    x, y = house_rows()
    path = write_rows(Path.cwd() / "data.csv", x, y, delimiter, decimal, header)
    summary = train_run(
        "--config", str(CONFIGS / "csv.yaml"), "--data.source.path", str(path), "--data.source.target", "y",
        "--data.val_fraction", "0", "--data.test_fraction", "0",
    )  # fmt: skip
    weight, bias = lstsq_with_intercept(x, y[:, None])
    np.testing.assert_allclose(summary["learned"]["weight"], weight, rtol=1e-3)
    np.testing.assert_allclose(summary["learned"]["bias"], bias, atol=1e-2)
