"""The command-line programs, one function each: the console scripts that ``setup.cfg`` declares
(``linreg-train`` ...), ``python -m linreg_pl`` and the files in ``scripts/`` all call these.
Each turns a user error into one line and exit status 2 (``run_command``)."""

import gc

from linreg_pl.cli import cli_main, run_command
from linreg_pl.logger import checksum_events_in_c


def started() -> None:
    """Called by every program once its imports are done. The objects they made (~400k: torch,
    Lightning) live as long as the program: frozen, no full garbage collection walks them again
    (~0.17 s each, several a run). ``scripts/_start.py`` turned collection off while importing.
    TensorBoard's event files are checksummed in C from here on."""
    gc.freeze()
    gc.enable()
    checksum_events_in_c()


def train() -> None:
    """``linreg-train``, ``scripts/train.py``, ``python -m linreg_pl``: fit and test a model."""
    started()
    cli_main()


def evaluate() -> None:
    """``linreg-evaluate``, ``scripts/evaluate.py``: score a checkpoint."""
    from linreg_pl.serve import evaluate

    started()
    run_command(evaluate, output_option="--output")


def predict() -> None:
    """``linreg-predict``, ``scripts/predict.py``: predictions of a checkpoint for a CSV file."""
    from linreg_pl.serve import predict

    started()
    run_command(predict, output_option="--output")


def tune() -> None:
    """``linreg-tune``, ``scripts/tune.py``: an Optuna study over training options (``[tune]`` extra)."""
    from linreg_pl.tune import main

    started()
    run_command(main)


def export() -> None:
    """``linreg-export``, ``scripts/export.py``: ONNX or ``torch.export`` file of a checkpoint (``[export]`` extra)."""
    from linreg_pl.export import export

    started()
    run_command(export)
