"""Memory and speed of training on streamed Parquet files, against the in-memory path and pyarrow.

    python benchmarks/streaming.py --rows 2000000 --features 50 --data /tmp/linreg_stream

Each row runs in a fresh process (so its peak resident memory is its own) on the same folder of
float32 Parquet files (written once by ``write_linear_dataset``, 100k-row row groups):
  floor     pyarrow reads the used columns of every row group (the I/O floor)
  stream    ParquetSource + RegressionDataModule + LinearRegression under a bare Trainer: the first
            pass (validation, split counts, moments), one training epoch, and the exact solver's pass
            over ``train_chunks`` (what the report does)
  memory    the same model and trainer on the table loaded into memory (the in-memory path)
  loader    the streamed training batches of one epoch alone (shuffled, split-filtered), no model
  baseline  the imports alone (torch, Lightning, pyarrow): the memory no data accounts for
Throughput is training rows per second of one epoch (validation off); ratios are against the floor
(rows per second of the whole folder). Peak RSS is the process's, plus its largest child (a reader
worker) when ``--num_workers`` > 0.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_floor(data: str) -> dict:
    import numpy as np
    import pyarrow.dataset as ds

    dataset = ds.dataset(sorted(str(p) for p in Path(data).glob("*.parquet")), format="parquet")
    columns = dataset.schema.names
    start, rows = time.perf_counter(), 0
    for batch in dataset.to_batches(columns=columns, batch_size=65536):
        rows += batch.num_rows
        for column in batch.columns:  # touch the decoded values, as any consumer must
            np.asarray(column)
    return {"rows": rows, "epoch_s": time.perf_counter() - start}


def run_training(data: str, mode: str, batch_size: int, steps_per_batch: int, num_workers: int) -> dict:
    import lightning as L
    import numpy as np
    import torch
    from lightning.pytorch.callbacks import Callback

    from linreg_pl import LinearRegression, ParquetSource, RegressionDataModule
    from linreg_pl.data.sources import DataSource, Table
    from linreg_pl.exact.solvers import Moments

    class InMemoryParquet(DataSource):
        """The same files loaded whole: the in-memory path."""

        standardize_by_default = True

        def __init__(self, path: str) -> None:
            self.path = path

        def load(self) -> Table:
            import pyarrow.dataset as ds

            table = ds.dataset(sorted(str(p) for p in Path(self.path).glob("*.parquet")), format="parquet").to_table()
            names = table.column_names
            values = np.column_stack([table[name].to_numpy().astype(np.float64) for name in names])
            return Table("memory", values[:, :-1], values[:, -1:], names[:-1], names[-1:])

    class EpochTimer(Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.seconds = time.perf_counter() - self.start

    start = time.perf_counter()
    source = ParquetSource(data, target="y", num_workers=num_workers) if mode == "stream" else InMemoryParquet(data)
    dm = RegressionDataModule(source, batch_size=batch_size, steps_per_batch=steps_per_batch)
    prepare_s = time.perf_counter() - start
    L.seed_everything(0, verbose=False)
    model = LinearRegression(
        dm.n_features,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.05),
        steps_per_batch=dm.steps_per_batch,
    )
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=dm)
    result = {"rows": dm.split_sizes["train"], "prepare_s": prepare_s, "epoch_s": timer.seconds}
    start = time.perf_counter()
    moments = Moments.empty(dm.n_features, dm.n_targets)
    for x, y, _ in dm.train_chunks(0, 1):
        moments = moments.merge(Moments.of(x, y))
    weight, _ = moments.solve()
    result["exact_pass_s"] = time.perf_counter() - start
    result["exact_weight_head"] = weight[0, :3].tolist()
    return result


def run_loader(data: str, batch_size: int, steps_per_batch: int, num_workers: int) -> dict:
    from linreg_pl import ParquetSource, RegressionDataModule

    dm = RegressionDataModule(
        ParquetSource(data, target="y", num_workers=num_workers), batch_size=batch_size, steps_per_batch=steps_per_batch
    )
    loader = dm.stream.loader("train", batch_size, 0, 1, train=True, shuffle=True, steps_per_batch=steps_per_batch)
    start, rows = time.perf_counter(), 0
    for batch in loader:
        rows += sum(len(x) for x, _ in batch) if steps_per_batch > 1 else len(batch[0])
    return {"rows": rows, "epoch_s": time.perf_counter() - start}


def child(args: argparse.Namespace) -> None:
    if args.mode == "floor":
        result = run_floor(args.data)
    elif args.mode == "loader":
        result = run_loader(args.data, args.batch_size, args.steps_per_batch, args.num_workers)
    elif args.mode == "baseline":
        import lightning  # noqa: F401
        import pyarrow.dataset  # noqa: F401

        import linreg_pl  # noqa: F401

        result = {}
    else:
        result = run_training(args.data, args.mode, args.batch_size, args.steps_per_batch, args.num_workers)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result["peak_rss_mb"] = own + children
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--data", default="/tmp/linreg_stream")
    parser.add_argument("--batch_size", type=int, default=4096)
    parser.add_argument("--steps_per_batch", type=int, default=16)
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--modes", nargs="+", default=["baseline", "floor", "loader", "stream", "memory"])
    parser.add_argument("--repeats", type=int, default=1, help="runs per row, interleaved; medians are shown")
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # set in the child processes
    args = parser.parse_args()
    if args.mode:
        child(args)
        return
    from linreg_pl.data.streaming import write_linear_dataset

    truth = Path(args.data) / "truth.json"
    written = json.loads(truth.read_text()) if truth.is_file() else {}
    if [written.get("rows"), written.get("features")] != [args.rows, args.features]:
        start = time.perf_counter()
        write_linear_dataset(args.data, rows=args.rows, features=args.features)
        print(f"wrote {args.rows} x {args.features} to {args.data} in {time.perf_counter() - start:.1f} s")
    runs: dict[str, list[dict]] = {mode: [] for mode in args.modes}
    for _ in range(args.repeats):
        for mode in args.modes:
            command = [sys.executable, __file__, *sys.argv[1:], "--mode", mode]
            finished = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            if finished.returncode:
                sys.exit(f"{mode} failed:\n{finished.stderr[-3000:]}")
            runs[mode].append(json.loads(finished.stdout.strip().splitlines()[-1]))
            print(mode, runs[mode][-1], flush=True)
    results = {
        mode: {key: statistics.median(r[key] for r in rs) for key in rs[0] if key != "exact_weight_head"}
        for mode, rs in runs.items()
    }
    floor = results["floor"]["rows"] / results["floor"]["epoch_s"] if "floor" in results else None
    print(
        f"\n{args.rows} x {args.features} float32, batch {args.batch_size} x {args.steps_per_batch} steps per batch, "
        f"{args.num_workers} reader workers, medians of {args.repeats}"
    )
    print(f"{'row':8} {'rows/s':>12} {'vs floor':>9} {'peak RSS MB':>12} {'first pass s':>13} {'exact pass s':>13}")
    for mode, result in results.items():
        speed = result["rows"] / result["epoch_s"] if "epoch_s" in result else float("nan")
        ratio = f"{speed / floor:.0%}" if floor and "epoch_s" in result else "-"
        print(
            f"{mode:8} {speed:12,.0f} {ratio:>9} {result['peak_rss_mb']:12.0f} "
            f"{result.get('prepare_s', 0):13.1f} {result.get('exact_pass_s', 0):13.1f}"
        )


if __name__ == "__main__":
    main()
