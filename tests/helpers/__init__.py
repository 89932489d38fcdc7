"""Helpers shared by the tests: paths, subprocess commands and independent reference answers."""

import subprocess
import sys
import time
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


def run_train(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300):
    """``scripts/train.py ARGS`` in a subprocess started in ``cwd``: the CompletedProcess."""
    import subprocess

    return subprocess.run(
        script_command("train.py", *args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def run_in_process(command, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """What a script of ``scripts/`` runs, ``run_command(command, ARGS)`` (``command`` e.g.
    ``linreg_pl.cli.train``), in this process from ``cwd``: its exit status and output as a
    subprocess would give them. For tests of what the command does, where a fresh interpreter
    (seconds to import Lightning) is not what is tested. The warnings the command raises (which
    pytest would otherwise record for its summary) are on stderr, as a program would print them."""
    import contextlib
    import io
    import os
    import warnings

    from linreg_pl.cli import run_command

    stdout, stderr, previous = io.StringIO(), io.StringIO(), Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            with warnings.catch_warnings(record=True) as caught:
                try:
                    run_command(command, list(args))
                    status = 0
                except SystemExit as exit:
                    status = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
            for w in caught:
                stderr.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno))
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess([command.__name__, *args], status, stdout.getvalue(), stderr.getvalue())


def train_in(directory: Path, *args: str) -> dict:
    """The training entry run in-process from ``directory`` (for fixtures shared by several tests,
    where the function-scoped ``train_run`` cannot serve): the summary."""
    import os

    from linreg_pl.cli import train

    previous, argv = Path.cwd(), sys.argv
    os.chdir(directory)
    sys.argv = ["train.py"]  # pytest's own flags are not ours
    try:
        return train([*args, *QUIET])
    finally:
        os.chdir(previous)
        sys.argv = argv


def file_snapshot(folder: Path) -> dict[Path, bytes]:
    """Every file under ``folder`` with its bytes, to check later that a command changed none."""
    return {path: path.read_bytes() for path in sorted(Path(folder).rglob("*")) if path.is_file()}


def assert_user_error(result, match: str) -> str:
    """Exit status 2, no traceback, and exactly one ``error:`` line on stderr, matching the regex ``match``."""
    import re

    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr[-2000:]
    assert re.search(match, error_lines[0]), error_lines[0]
    return error_lines[0]


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
