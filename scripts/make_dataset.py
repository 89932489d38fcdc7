"""Write a large linear data set as sharded files: ``python scripts/make_dataset.py --rows N --features D --out DIR``.

The files hold y = x @ w + b + noise (float32 columns x0..x{D-1}, y); ``DIR/truth.json`` holds w
and b. Memory stays bounded by one row group, whatever N.
"""

import _start  # noqa: F401, I001  (first: a signal while importing ends in one line too)

import argparse

from linreg_pl.cli import run_command
from linreg_pl.commands import started
from linreg_pl.data.streaming import write_linear_dataset
from linreg_pl.errors import InputError


class OneLineParser(argparse.ArgumentParser):
    """argparse that raises, so that a bad flag ends in one line (run_command) instead of the usage."""

    def error(self, message: str):
        raise InputError(f"{message} (--help lists the options)")


def main(args: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--features", type=int, required=True)
    parser.add_argument("--out", required=True, help="folder to write (created if missing)")
    parser.add_argument("--rows_per_file", type=int, default=1_000_000)
    parser.add_argument("--row_group_size", type=int, default=100_000, help="rows per Parquet row group")
    parser.add_argument("--noise", type=float, default=0.1, help="standard deviation of the noise on y")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=["parquet", "csv", "csv.gz"], default="parquet")
    parser.add_argument("--overwrite", action="store_true", help="replace a folder that holds files, whole")
    options = vars(parser.parse_args(args))
    write_linear_dataset(**options)
    print(options["out"])


if __name__ == "__main__":
    started()
    run_command(main, output_option="--out")
