"""Speed of one epoch of linear-regression training: ours under Lightning vs. the alternatives.

    python -m benchmarks.training                    # both cases, CPU (and GPU when present)
    python -m benchmarks.training --cases small --repeats 3 --out benchmark_results

Rows, on the same in-memory data and seeds:
  1 textbook      TensorDataset + DataLoader(shuffle=True), nn.Linear, MSELoss, SGD
  2 hand-written  tensors in memory, a randperm per epoch, slices of the index tensor (the baseline)
  2b              the same gathering each batch's rows with index_select, as our data module does
                  (on the CPU ~4x faster than x[index] for wide rows)
  3 linreg_pl     LinearRegression + RegressionDataModule under the Trainer, built by the CLI as a
                  user runs it (TensorBoard logging, checkpoints, every default callback but the
                  fit snapshots, a fixed cost per run; --data.steps_per_batch auto), with
                  validation off so that every row does the same work
  3b              the same with --data.steps_per_batch K (default 1: one optimizer step per
                  Lightning batch, what a plain LightningModule does)
  3c              the same module and data module (steps_per_batch auto) under a bare Trainer (the
                  same TensorBoard logger, no callbacks, no checkpointing): the rows 3 / 3c ratio
                  is what our machinery costs
  4 sklearn       LinearRegression (exact) and SGDRegressor(penalty=None)
  5 exact solver  linreg_pl.exact.solvers (streaming float64 Gram, one pass)
  6 memory floor  one read of X
Times are medians over repeats; ratios are against row 2 in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from linreg_pl.cli import TrainCLI, ignore_third_party_warnings
from linreg_pl.commands import started
from linreg_pl.exact.solvers import Moments

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    """One measured row; ``key`` is stable across versions (for comparing result files)."""

    key: str
    label: str
    case: str
    device: str
    s_per_epoch: float
    samples_per_s: float
    us_per_step: float | None
    ratio_vs_hand_written: float
    mse_vs_optimum: float | None
    weight: list
    bias: list


@dataclass
class Case:
    name: str
    n_samples: int
    n_features: int
    batch_size: int
    lr: float
    epochs: int


CASES = {
    "small": Case("small (d2l)", 1000, 2, 10, 0.03, 5),
    "large": Case("large", 1_000_000, 100, 4096, 0.05, 3),
}


def case_weights(case: Case) -> tuple[list[float], float]:
    if case.n_features == 2:
        return [2.0, -3.4], 4.2  # the d2l set
    rng = np.random.default_rng(1)
    return rng.normal(size=case.n_features).round(3).tolist(), 0.5


def callbacks_per_step() -> list[dict]:
    """configs/default.yaml's callbacks less FitFigures, whose ~20 snapshots a run are a fixed cost
    per run (0.1-0.3 s a figure), not a cost per step."""
    callbacks = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())["trainer"]["callbacks"]
    return [c for c in callbacks if not c["class_path"].endswith("FitFigures")]


def cli_args(case: Case, root: str, accelerator: str, steps_per_batch: int | str = "auto") -> list[str]:
    weight, bias = case_weights(case)
    return [
        f"--trainer.callbacks={json.dumps(callbacks_per_step())}",
        f"--data.source.weight={json.dumps(weight)}",
        f"--data.source.bias={bias}",
        f"--data.source.n_samples={case.n_samples}",
        "--data.val_fraction=0",
        "--data.test_fraction=0",
        f"--data.batch_size={case.batch_size}",
        f"--data.steps_per_batch={steps_per_batch}",
        f"--model.optimizer.lr={case.lr}",
        f"--trainer.max_epochs={case.epochs}",
        f"--trainer.accelerator={accelerator}",
        "--trainer.devices=1",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={root}",
        "--trainer.logger.init_args.name=benchmark",
    ]


class EpochTimer(Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - self._start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def textbook_loop(x, y, case: Case, device):
    """Row 1: the way the textbooks write it."""
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(x, y), batch_size=case.batch_size, shuffle=True)
    model = nn.Linear(x.shape[1], y.shape[1]).to(device)
    loss_fn, optimizer = nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=case.lr)
    seconds = []
    for _ in range(case.epochs):
        start = time.perf_counter()
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds, model


def hand_written_loop(x, y, case: Case, device, index_select: bool = False):
    """Row 2: the best plain PyTorch loop: data on the device, one gather per batch (``x[index]``,
    or with ``index_select``: row 2b)."""
    torch.manual_seed(0)
    x, y = x.to(device), y.to(device)
    model = nn.Linear(x.shape[1], y.shape[1]).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=case.lr)
    seconds = []
    for _ in range(case.epochs):
        start = time.perf_counter()
        order = torch.randperm(len(x), device=device)
        for first in range(0, len(x), case.batch_size):
            index = order[first : first + case.batch_size]
            if index_select:
                xb, yb = x.index_select(0, index), y.index_select(0, index)
            else:
                xb, yb = x[index], y[index]
            loss = nn.functional.mse_loss(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds, model


def lightning_run(case: Case, accelerator: str, steps_per_batch: int | str = "auto"):
    """Row 3: ours, built by the CLI exactly as `scripts/train.py` builds it."""
    with tempfile.TemporaryDirectory() as root:
        cli = TrainCLI(cli_args(case, root, accelerator, steps_per_batch))
        timer = EpochTimer()
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return timer.seconds, cli.model


def bare_lightning_run(case: Case, accelerator: str):
    """Row 3c: row 3's module and data module under a Trainer with nothing but the logger."""
    from lightning.pytorch.loggers import TensorBoardLogger

    with tempfile.TemporaryDirectory() as root:
        cli = TrainCLI(cli_args(case, root, accelerator))
        timer = EpochTimer()
        trainer = L.Trainer(
            max_epochs=case.epochs,
            accelerator=accelerator,
            devices=1,
            logger=TensorBoardLogger(root, name="bare", default_hp_metric=False),
            log_every_n_steps=cli.trainer.log_every_n_steps,
            callbacks=[timer],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
        )
        trainer.fit(cli.model, datamodule=cli.datamodule)
    return timer.seconds, cli.model


def parameters(model) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(model, "learned_parameters"):
        return model.learned_parameters()
    return model.weight.detach().double().cpu().numpy(), model.bias.detach().double().cpu().numpy()


def run_case(case: Case, accelerator: str, repeats: int, steps_per_batch: int) -> list[dict]:
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    weight, bias = case_weights(case)
    from linreg_pl import RegressionDataModule, SyntheticLinear

    dm = RegressionDataModule(
        SyntheticLinear(weight=weight, bias=bias, n_samples=case.n_samples), val_fraction=0, test_fraction=0
    )
    x64, y64 = dm.arrays("train")
    x, y = torch.as_tensor(x64, dtype=torch.float32), torch.as_tensor(y64, dtype=torch.float32)
    moments = Moments.of(x64, y64)
    optimum = moments.objective(*moments.solve())
    steps = -(-len(x) // case.batch_size)

    def timed(fn):
        start = time.perf_counter()
        result = fn()
        sync(device)
        return [time.perf_counter() - start], result

    # Each entry: label, run() -> (epoch seconds, model or (weight, bias)), steps per epoch.
    runs = [
        ("textbook", "1 textbook DataLoader", lambda: textbook_loop(x, y, case, device), steps),
        ("hand_written", "2 hand-written loop (baseline)", lambda: hand_written_loop(x, y, case, device), steps),
        (
            "hand_written_index_select",
            "2b hand-written loop, index_select",
            lambda: hand_written_loop(x, y, case, device, index_select=True),
            steps,
        ),
        ("lightning", "3 linreg_pl under Lightning", lambda: lightning_run(case, accelerator), steps),
        (
            "lightning_fast",
            f"3b linreg_pl, --data.steps_per_batch {steps_per_batch}",
            lambda: lightning_run(case, accelerator, steps_per_batch),
            steps,
        ),
        ("lightning_bare", "3c bare Trainer, same module", lambda: bare_lightning_run(case, accelerator), steps),
    ]
    if accelerator == "cpu":
        from sklearn.linear_model import LinearRegression as SkLinear
        from sklearn.linear_model import SGDRegressor

        def sklearn_exact():
            seconds, fitted = timed(lambda: SkLinear().fit(x64, y64))
            return seconds, (fitted.coef_, fitted.intercept_)

        def sklearn_sgd():
            seconds, fitted = timed(
                lambda: SGDRegressor(penalty=None, max_iter=case.epochs, tol=None, random_state=0).fit(x64, y64[:, 0])
            )
            return [seconds[0] / case.epochs], (fitted.coef_[None, :], fitted.intercept_)

        runs += [
            ("sklearn_exact", "4a sklearn LinearRegression (total)", sklearn_exact, None),
            ("sklearn_sgd", "4b sklearn SGDRegressor (per-sample steps)", sklearn_sgd, len(x)),
            (
                "exact_solver",
                "5 linreg_pl exact solver (total)",
                lambda: timed(lambda: Moments.of(x64, y64).solve()),
                None,
            ),
        ]
    x_device = x.to(device)
    runs.append(("memory_floor", "6 memory floor (one read of X)", lambda: timed(x_device.sum), None))

    # Repeats go round-robin over the rows, so that a slow spell of the machine hits every row.
    medians: dict[str, list[float]] = {key: [] for key, _, _, _ in runs}
    results = {}
    for _ in range(repeats):
        for key, _, run, _ in runs:
            seconds, results[key] = run()
            medians[key].append(statistics.median(seconds))

    baseline = statistics.median(medians["hand_written"])
    rows = []
    for key, label, _, steps_per_epoch in runs:
        epoch = statistics.median(medians[key])
        result = results[key]
        fitted = parameters(result) if isinstance(result, nn.Module) else result
        weight, bias = fitted if isinstance(fitted, tuple) else (None, None)
        mse = moments.objective(weight, bias) if weight is not None else None
        rows.append(
            Row(
                key=key,
                label=label,
                case=case.name,
                device=accelerator,
                s_per_epoch=epoch,
                samples_per_s=len(x) / epoch,
                us_per_step=epoch / steps_per_epoch * 1e6 if steps_per_epoch else None,
                ratio_vs_hand_written=epoch / baseline,
                mse_vs_optimum=mse / optimum if mse is not None and optimum > 0 else None,
                weight=np.asarray(weight).tolist() if weight is not None else [],
                bias=np.asarray(bias).tolist() if bias is not None else [],
            )
        )
    return rows


def markdown(rows: list[Row]) -> str:
    lines = []
    for case, device in dict.fromkeys((r.case, r.device) for r in rows):
        lines += [
            f"\n### {case}, {device}\n",
            "| row | s/epoch | samples/s | µs/step | ×row 2 | MSE / optimum |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in (r for r in rows if (r.case, r.device) == (case, device)):
            step = f"{r.us_per_step:.1f}" if r.us_per_step else "–"
            mse = f"{r.mse_vs_optimum:.4f}" if r.mse_vs_optimum else "–"
            cells = [
                r.label,
                f"{r.s_per_epoch:.4g}",
                f"{r.samples_per_s:.3g}",
                step,
                f"{r.ratio_vs_hand_written:.2f}",
                mse,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(args: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["small", "large"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps_per_batch", type=int, default=1, help="K of row 3b")
    parser.add_argument("--n_samples", type=int, help="override every case's number of rows (quick checks)")
    parser.add_argument("--epochs", type=int, help="override every case's number of epochs")
    parser.add_argument("--out", default="benchmark_results", help="folder for results.md and results.json")
    config = parser.parse_args(args)
    ignore_third_party_warnings()  # Lightning's LeafSpec deprecation, once per Trainer
    L.seed_everything(0, verbose=False)
    rows = []
    accelerators = ["cpu"] + (["gpu"] if torch.cuda.is_available() else [])
    for name in config.cases:
        case = CASES[name]
        case.n_samples = config.n_samples or case.n_samples
        case.epochs = config.epochs or case.epochs
        for accelerator in accelerators:
            rows += run_case(case, accelerator, config.repeats, config.steps_per_batch)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    table = markdown(rows)
    (out / "results.md").write_text(table)
    print(table)
    return rows


if __name__ == "__main__":
    started()  # as the programs do: no full garbage collection walks the imports' objects
    main()
