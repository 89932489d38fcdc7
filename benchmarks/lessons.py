"""What our machinery costs on each lesson: the default run against a bare Lightning Trainer and
the lesson's plain PyTorch loop, in one run (ratios within the run; medians of interleaved repeats).

    python -m benchmarks.lessons                          # every lesson config, 3 repeats
    python -m benchmarks.lessons --lessons d2l line --repeats 5 --startup

Per lesson (configs/<lesson>.yaml, same data, seed, epochs, learning rate):
  default     what ``scripts/train.py --config configs/<lesson>.yaml`` runs: the Trainer the CLI builds,
              every default callback (snapshots, GIF, landscape, checkpoints, report), TensorBoard;
              ``fit`` timed alone, and ``fit`` + ``test`` + report (everything a user sees)
  bare        ``L.Trainer`` with the same TensorBoard logger, epochs, logging and validation cadence,
              no callbacks, no checkpointing, on the same LinearRegression and data module
  plain       the lesson's textbook loop: nn.Linear, MSELoss, torch.optim.SGD over the training rows
              (full batch; d2l: TensorDataset + DataLoader(batch_size, shuffle=True))
``--startup`` adds ``scripts/train.py --help`` against ``python -c "import lightning.pytorch"``;
``--programs`` adds ``python scripts/train.py`` (the default lesson, d2l, start to exit) against the
textbook d2l program (``TEXTBOOK_D2L``: the same rows, epochs, batch and learning rate).
The in-process rows freeze the objects of the imports first, as the programs do
(``linreg_pl.commands.started``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from linreg_pl.cli import TrainCLI, ignore_third_party_warnings
from linreg_pl.commands import started
from linreg_pl.runtime.runs import run_directory

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ("line", "four_points", "d2l", "make_regression")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
# The d2l lesson as its textbook writes it, as a program: 1000 rows of N(0, 1) features, 800 trained
# on, 10 epochs of minibatch SGD (batch 10, lr 0.03), then the learned parameters printed.
TEXTBOOK_D2L = """
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
x = torch.normal(0, 1, (1000, 2))
y = (x @ torch.tensor([2.0, -3.4]) + 4.2 + torch.normal(0, 0.01, (1000,))).reshape(-1, 1)
model, loss_fn = nn.Linear(2, 1), nn.MSELoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.03)
for epoch in range(10):
    for xb, yb in DataLoader(TensorDataset(x[:800], y[:800]), batch_size=10, shuffle=True):
        loss = loss_fn(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
print(model.weight.data, model.bias.data)
"""


def lesson_cli(lesson: str, save_dir: str, flags: list[str]) -> TrainCLI:
    L.seed_everything(0, verbose=False)
    config = str(ROOT / "configs" / f"{lesson}.yaml")
    return TrainCLI(["--config", config, f"--trainer.logger.init_args.save_dir={save_dir}", *QUIET, *flags])


def default_run(lesson: str, flags: list[str]) -> dict[str, float]:
    """Seconds of ``fit`` and of ``fit`` + ``test`` + report, as ``linreg_pl.cli.train`` runs them."""
    with tempfile.TemporaryDirectory() as root:
        cli = lesson_cli(lesson, root, flags)
        trainer = cli.trainer
        with run_directory(trainer), contextlib.redirect_stdout(io.StringIO()):  # the report
            return fit_and_test(trainer, cli)


def bare_run(lesson: str, flags: list[str]) -> dict[str, float]:
    """The same module and data under a Trainer with nothing but the logger."""
    with tempfile.TemporaryDirectory() as root:
        with contextlib.redirect_stdout(io.StringIO()):  # the data module's steps_per_batch line
            cli = lesson_cli(lesson, root, flags)
        trainer = L.Trainer(
            max_epochs=cli.trainer.max_epochs,
            logger=TensorBoardLogger(root, name="bare", default_hp_metric=False),
            log_every_n_steps=cli.trainer.log_every_n_steps,
            check_val_every_n_epoch=cli.trainer.check_val_every_n_epoch,
            callbacks=[],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        return fit_and_test(trainer, cli)


def fit_and_test(trainer: L.Trainer, cli: TrainCLI) -> dict[str, float]:
    """Seconds of ``fit``, and of ``fit`` + ``test``, of the CLI's model and data on ``trainer``."""
    start = time.perf_counter()
    trainer.fit(cli.model, datamodule=cli.datamodule)
    fit = time.perf_counter() - start
    trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    return {"fit": fit, "total": time.perf_counter() - start}


def plain_run(lesson: str, flags: list[str]) -> dict[str, float]:
    """The lesson's textbook PyTorch loop on the same training rows."""
    with tempfile.TemporaryDirectory() as root:
        cli = lesson_cli(lesson, root, flags)
    x, y = (torch.as_tensor(a, dtype=torch.float32) for a in cli.datamodule.arrays("train"))
    epochs, batch_size = cli.trainer.max_epochs, cli.datamodule.batch_size
    lr = cli.config.model.optimizer.init_args.lr
    torch.manual_seed(0)
    start = time.perf_counter()
    model = nn.Linear(x.shape[1], y.shape[1])
    loss_fn, optimizer = nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=lr)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True) if batch_size else [(x, y)]
    for _ in range(epochs):
        for xb, yb in loader:
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    return {"fit": seconds, "total": seconds}


def startup_run(command: list[str]) -> dict[str, float]:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    return {"fit": seconds, "total": seconds}


def program_run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as root:
        return startup_run([sys.executable, "scripts/train.py", f"--trainer.logger.init_args.save_dir={root}"])


WAYS = {"default": default_run, "bare": bare_run, "plain": plain_run}


def main(args: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lessons", nargs="+", choices=LESSONS, default=list(LESSONS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--startup", action="store_true", help="also time scripts/train.py --help vs the import")
    parser.add_argument("--programs", action="store_true", help="also time python scripts/train.py vs the textbook")
    parser.add_argument("--epochs", type=int, help="override every lesson's epochs (quick checks)")
    config = parser.parse_args(args)
    ignore_third_party_warnings()
    flags = [f"--trainer.max_epochs={config.epochs}"] if config.epochs else []
    runs = {(lesson, way): run for lesson in config.lessons for way, run in WAYS.items()}
    if config.startup:
        runs[("startup", "ours")] = lambda *_: startup_run([sys.executable, "scripts/train.py", "--help"])
        runs[("startup", "baseline")] = lambda *_: startup_run([sys.executable, "-c", "import lightning.pytorch"])
    if config.programs:
        runs[("program", "ours")] = lambda *_: program_run()
        runs[("program", "baseline")] = lambda *_: startup_run([sys.executable, "-c", TEXTBOOK_D2L])
    # Round-robin over every row, so that a slow spell of the machine hits each of them.
    seconds: dict[tuple[str, str], list[dict[str, float]]] = {key: [] for key in runs}
    for _ in range(config.repeats):
        for (lesson, way), run in runs.items():
            seconds[(lesson, way)].append(run(lesson, flags))
    medians = {
        key: {part: statistics.median(r[part] for r in results) for part in ("fit", "total")}
        for key, results in seconds.items()
    }
    print(table(medians, config.lessons, config.repeats))
    return medians


def table(medians: dict, lessons: list[str], repeats: int) -> str:
    lines = [
        f"medians of {repeats} interleaved repeats, seconds",
        "",
        "| lesson | default fit | bare Trainer fit | plain loop | default / bare | default / plain "
        "| default fit+test+report | bare fit+test | end to end / plain |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for lesson in lessons:
        ours, bare, plain = (medians[(lesson, way)] for way in WAYS)
        cells = [
            f"{ours['fit']:.2f}",
            f"{bare['fit']:.2f}",
            f"{plain['fit']:.3f}",
            f"{ours['fit'] / bare['fit']:.2f}×",
            f"{ours['fit'] / plain['fit']:.1f}×",
            f"{ours['total']:.2f}",
            f"{bare['total']:.2f}",
            f"{ours['total'] / plain['fit']:.1f}×",
        ]
        lines.append(f"| {lesson} | " + " | ".join(cells) + " |")
    for key, (label, baseline) in {
        "startup": ("`scripts/train.py --help`", "`import lightning.pytorch`"),
        "program": ("`python scripts/train.py` (d2l, start to exit)", "the textbook d2l program"),
    }.items():
        if (key, "ours") in medians:
            ours, other = medians[(key, "ours")]["fit"], medians[(key, "baseline")]["fit"]
            lines += ["", f"{label} {ours:.2f} s, {baseline} {other:.2f} s: {ours / other:.2f}×"]
    return "\n".join(lines)


if __name__ == "__main__":
    started()  # as the programs do: no full garbage collection walks the imports' objects
    main()
