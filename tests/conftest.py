"""Shared fixtures: every test that trains runs in its own temporary working directory."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

# jsonargparse deprecations raised from inside Lightning's CLI: nothing for this project to fix.
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in a fresh directory so that logs/ and summary.json land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def train_run(in_tmp, monkeypatch):
    """Call the training entry in-process: ``train_run("--config", path, ...)`` -> summary."""
    from linreg_pl.cli import train

    monkeypatch.setattr(sys, "argv", ["train.py"])  # pytest's own flags are not ours

    def run(*args: str) -> dict:
        return train([*args, *QUIET])

    return run


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
