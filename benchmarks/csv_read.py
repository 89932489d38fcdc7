"""CSV reading cost: ``linreg_pl.data.csv.read_csv`` (layout sniffed from 64 KiB, then pandas' C parser)
against plain ``pandas.read_csv`` on the same file, and against pandas' own sniffing (``sep=None``,
python engine), as ratios to the plain read in the same run.

``python benchmarks/csv_read.py [--rows 1000000]``
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from linreg_pl.data.csv import read_csv


def best_of(repeats: int, function) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(args.rows, 5)), columns=list("abcdy"))
    with tempfile.TemporaryDirectory() as folder:
        comma, semicolon = Path(folder) / "comma.csv", Path(folder) / "semicolon.csv"
        frame.to_csv(comma, index=False, float_format="%.6f")
        frame.to_csv(semicolon, index=False, sep=";", decimal=",", float_format="%.6f")
        # The baseline is the reader before layout sniffing: the same pandas options, comma only.
        baseline = best_of(args.repeats, lambda: pd.read_csv(comma, encoding="utf-8-sig", skipinitialspace=True))
        rows = {
            "pandas.read_csv, comma (baseline)": baseline,
            "pandas.read_csv, pandas defaults": best_of(args.repeats, lambda: pd.read_csv(comma)),
            "read_csv, comma": best_of(args.repeats, lambda: read_csv(comma)),
            "read_csv, ';' and decimal commas": best_of(args.repeats, lambda: read_csv(semicolon)),
            "pandas sep=None (python engine)": best_of(1, lambda: pd.read_csv(comma, sep=None, engine="python")),
        }
    print(f"{args.rows} rows x 5 columns, best of {args.repeats}")
    for name, seconds in rows.items():
        print(f"{name:40s} {seconds:7.3f} s  {seconds / baseline:5.2f}x")


if __name__ == "__main__":
    main()
