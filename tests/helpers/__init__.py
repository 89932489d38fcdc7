"""Helpers shared by the tests: paths, subprocess commands and independent reference answers."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
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


def http_get(url: str, timeout: float = 5) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


@contextmanager
def tensorboard_server(logdir: Path, *flags: str, timeout: float = 60) -> Iterator[str]:
    """A real ``tensorboard`` server on 127.0.0.1 over ``logdir`` (with extra command-line
    ``flags``); yields its base URL once it has loaded the runs' scalars (polled, bounded by
    ``timeout``), and stops it afterwards."""
    import json
    import subprocess
    import time

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if json.loads(http_get(f"{base}/data/plugin/scalars/tags")):
                    break
            except OSError:
                pass
            assert server.poll() is None, server.stderr.read().decode()
            assert time.monotonic() < deadline, f"tensorboard did not load {logdir} within {timeout} s"
            time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)
