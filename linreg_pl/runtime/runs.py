"""A run's directory (``logs/<name>/version_N``): claimed by one run only, never another run's,
and not left behind empty by a run that failed to start.

Lightning picks ``version_N`` as one more than the largest it sees and creates the directory
later, so two runs started together took the same one, and an explicit
``--trainer.logger.init_args.version NAME`` silently wrote over an earlier run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from linreg_pl.errors import InputError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the exclusive mkdir still refuses a taken directory
    fcntl = None


def claim_run_dir(logger: TensorBoardLogger | CSVLogger, ckpt_path: str | None = None) -> tuple[Path, bool]:
    """Fix the logger's version and create its directory, atomically among linreg_pl runs.

    The version is resolved (``version_N`` one past the largest, or the one given) while the
    experiment folder is locked, and its directory made with an ``mkdir`` that fails if it
    exists. An existing directory is only accepted when resuming it: ``ckpt_path`` is ``"last"``
    or a checkpoint inside it.

    Returns
    -------
    (path, created) : tuple[Path, bool]
        The run directory, and whether this call created it.

    Examples
    --------
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> first, second = TensorBoardLogger(root, name="demo"), TensorBoardLogger(root, name="demo")
    >>> [claim_run_dir(logger)[0].name for logger in (first, second)]
    ['version_0', 'version_1']
    >>> claim_run_dir(TensorBoardLogger(root, name="demo", version=0))
    Traceback (most recent call last):
    ...
    linreg_pl.errors.InputError: --trainer.logger.init_args.version=0: ... holds an earlier run; ...
    """
    experiment = Path(logger.root_dir)
    experiment.mkdir(parents=True, exist_ok=True)
    with _locked(experiment):
        path = Path(logger.log_dir)  # resolves the version: under the lock, no other run picks it now
        try:
            path.mkdir(parents=True)
            return path, True
        except FileExistsError:
            if not _resumes(path, ckpt_path):
                raise InputError(
                    f"--trainer.logger.init_args.version={logger.version!r}: '{path}' holds an earlier run; "
                    "choose another version, leave it unset for the next free version_N, or resume that run "
                    "with --ckpt_path last or a checkpoint inside it."
                ) from None
            return path, False


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``directory`` itself (no lock file left beside the runs)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _resumes(run_dir: Path, ckpt_path: str | None) -> bool:
    if ckpt_path is None:
        return False
    return ckpt_path == "last" or run_dir.resolve() in Path(ckpt_path).resolve().parents


@contextmanager
def run_directory(trainer: L.Trainer, ckpt_path: str | None = None) -> Iterator[Path | None]:
    """Claim the run directory (rank 0, see ``claim_run_dir``) for the block; if the block fails
    before a training step and before any checkpoint, the directory holds nothing of value
    (config, hyper-parameters, an empty event file) and is removed again. One that existed
    before (a resumed run) is never removed.

    Yields the directory, or None where this process claims none: no TensorBoard or CSV logger,
    ``fast_dev_run``, or a rank other than 0 (under ``strategy="ddp"`` the other ranks re-run
    the script; Lightning hands them rank 0's directory by broadcast where it uses it).
    """
    logger = trainer.logger
    if not isinstance(logger, (TensorBoardLogger, CSVLogger)) or trainer.fast_dev_run or rank_zero_only.rank != 0:
        yield None
        return
    path, created = claim_run_dir(logger, ckpt_path)
    try:
        yield path
    except BaseException as error:
        if created and trainer.global_step == 0 and not any(path.rglob("*.ckpt")):
            shutil.rmtree(path, ignore_errors=True)
        if isinstance(error, OSError) and error.filename is None:
            # TensorBoard's writer thread re-raises a failed write without its file: name the run.
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
