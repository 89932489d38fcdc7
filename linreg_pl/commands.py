"""The command-line programs, one function each: the console scripts that ``setup.cfg`` declares
(``linreg-train`` ...), ``python -m linreg_pl`` and the files in ``scripts/`` all call these.
Each turns a user error into one line and exit status 2 (``run_command``)."""

from linreg_pl.cli import cli_main, run_command


def train() -> None:
    """``linreg-train``, ``scripts/train.py``, ``python -m linreg_pl``: fit and test a model."""
    cli_main()


def evaluate() -> None:
    """``linreg-evaluate``, ``scripts/evaluate.py``: score a checkpoint."""
    from linreg_pl.serve import evaluate

    run_command(evaluate, output_option="--output")


def predict() -> None:
    """``linreg-predict``, ``scripts/predict.py``: predictions of a checkpoint for a CSV file."""
    from linreg_pl.serve import predict

    run_command(predict, output_option="--output")


def tune() -> None:
    """``linreg-tune``, ``scripts/tune.py``: an Optuna study over training options (``[tune]`` extra)."""
    from linreg_pl.tune import main

    run_command(main)


def export() -> None:
    """``linreg-export``, ``scripts/export.py``: ONNX or ``torch.export`` file of a checkpoint (``[export]`` extra)."""
    from linreg_pl.export import export

    run_command(export)
