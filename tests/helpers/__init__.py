"""Helpers shared by the tests: paths, subprocess commands and independent reference answers."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def script_command(name: str, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / name), *args]


def lstsq_with_intercept(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: numpy's SVD least squares on [x, 1]."""
    design = np.hstack([x, np.ones((len(x), 1))])
    solution = np.linalg.lstsq(design, y, rcond=None)[0]
    return solution[:-1].T, solution[-1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_epochs(path: Path, process: subprocess.Popen, epochs: int, deadline_s: float = 120) -> dict:
    """Poll (bounded) until the run has written last.ckpt for ``epochs`` finished epochs; returns it."""
    import torch

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        if path.is_file() and (checkpoint := torch.load(path, weights_only=True))["epoch"] >= epochs - 1:
            return checkpoint
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint of epoch {epochs} within {deadline_s} s")
