"""Helpers shared by the tests: paths, subprocess commands and independent reference answers."""

import sys
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
