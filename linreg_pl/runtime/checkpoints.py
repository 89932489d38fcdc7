"""Checkpoints: written atomically, read without executing code, checked against the model."""

from __future__ import annotations

import os
import pickle
import sys
import zipfile
from pathlib import Path
from time import monotonic
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from linreg_pl.errors import InputError
from linreg_pl.runtime.files import PARTIAL_SUFFIX, atomic_open
from linreg_pl.runtime.signals import Interrupted

LIGHTNING_INTERRUPTS = (KeyboardInterrupt, SIGTERMException)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint atomically (``linreg_pl.runtime.files``): a process that dies while saving
    leaves the previous checkpoint, never a truncated one. Lightning's own local save moves a temp
    file from the system temp dir, which is a plain copy across filesystems."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_open(path) as file:
            torch.save(checkpoint, file)


def last_checkpoint_path(trainer: L.Trainer) -> Path | None:
    """``last.ckpt`` beside the best checkpoint, or None when checkpointing is off."""
    checkpoint = trainer.checkpoint_callback
    if checkpoint is None or not checkpoint.dirpath:
        return None
    return Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"


class LastCheckpoint(Callback):
    """Writes ``last.ckpt`` during training once ``every_n_seconds`` have passed since the last
    save, at the end of training, and on Ctrl-C or SIGTERM before exiting.

    The clock is read at the end of the first epoch after each ``every_n_steps`` training steps:
    every epoch of a mini-batch run, every 50th of a full-batch lesson (one step per epoch,
    hundreds of epochs a second). In a DDP run rank 0 reads it and tells the others (a collective,
    hence not every step), so that every process saves (a collective too) at the same epoch. A
    lesson of a second or two saves once, at the end, where it saved at every epoch (d2l: ten
    saves of ~5 ms). A process killed outright (SIGKILL) loses the training since the last save:
    about ``every_n_seconds``, and at most the epoch under way on top.

    ``ModelCheckpoint(save_last=True)`` writes it only in epochs that improved the monitored
    metric, so a run resumed with ``--ckpt_path last`` could silently repeat epochs. A diverged
    run writes nothing: the last good checkpoint stays. At the start of fitting, rank 0 removes
    the partial files that a killed save left in the checkpoint directories of the run.

    Parameters
    ----------
    every_n_seconds : float
        Seconds of training between two saves (0: at every reading of the clock).
    every_n_steps : int
        Training steps between two readings of the clock, counted at the ends of epochs.
    """

    def __init__(self, every_n_seconds: float = 1.0, every_n_steps: int = 50) -> None:
        if not every_n_seconds >= 0:
            raise InputError(f"LastCheckpoint every_n_seconds={every_n_seconds} must be a number >= 0.")
        if every_n_steps < 1:
            raise InputError(f"LastCheckpoint every_n_steps={every_n_steps} must be an integer >= 1.")
        self.every_n_seconds, self.every_n_steps = every_n_seconds, every_n_steps
        self._saved_step = self._checked_step = 0
        self._saved_at = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        last = last_checkpoint_path(trainer)
        if trainer.is_global_zero:
            for directory in {p.parent for p in (last, trainer.ckpt_path and Path(trainer.ckpt_path)) if p}:
                remove_stale_partials(directory)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A resumed run counts from its checkpoint.
        self._saved_step = self._checked_step = trainer.global_step
        self._saved_at = monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step - self._checked_step < self.every_n_steps:
            return
        self._checked_step = trainer.global_step
        if trainer.strategy.broadcast(monotonic() - self._saved_at >= self.every_n_seconds):
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._saved_step:  # the trained model: what the report names
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        path = last_checkpoint_path(trainer)
        if path is not None and not trainer.fast_dev_run and not trainer.sanity_checking:
            trainer.save_checkpoint(path, weights_only=False)
            self._saved_step, self._saved_at = trainer.global_step, monotonic()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        path = last_checkpoint_path(trainer)
        if path is None or trainer.fast_dev_run or trainer.state.fn != "fit":
            return
        # trainer.save_checkpoint ends in a barrier: only safe where every rank raised at the same
        # step (GracefulStop's Interrupted), or alone. Lightning's own interrupts, and a signal
        # at start-up, reach the ranks at different moments.
        alone = trainer.world_size == 1
        agreed = isinstance(exception, Interrupted) and exception.at_agreed_step
        if not agreed and not (alone and isinstance(exception, LIGHTNING_INTERRUPTS)):
            return
        trainer.save_checkpoint(path, weights_only=False)
        if trainer.is_global_zero:
            print(
                f"interrupted at epoch {trainer.current_epoch}, step {trainer.global_step}: saved {path}; "
                "continue with --ckpt_path last",
                file=sys.stderr,
            )


def remove_stale_partials(directory: str | os.PathLike) -> list[Path]:
    """Delete the ``.NAME.PID.partial`` files of ``atomic_open`` whose writer is no longer alive
    (killed mid-save); returns them. Those of a live process (a run saving now) stay.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> dead, live = folder / ".last.ckpt.999999999.partial", folder / f".last.ckpt.{os.getpid()}.partial"
    >>> _ = dead.write_bytes(b"x"), live.write_bytes(b"x")
    >>> [p.name for p in remove_stale_partials(folder)], sorted(p.name for p in folder.iterdir())
    (['.last.ckpt.999999999.partial'], ['.last.ckpt...partial'])
    """
    removed = []
    for partial in Path(directory).glob(f".*{PARTIAL_SUFFIX}"):
        pid = partial.name[: -len(PARTIAL_SUFFIX)].rpartition(".")[2]
        if pid.isdigit() and not process_is_alive(int(pid)):
            partial.unlink(missing_ok=True)
            removed.append(partial)
    return removed


def process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only, so a file
    that carries code is refused instead of run."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: '{path}'; give the path of a .ckpt file.")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a truncated one has no directory
        raise InputError(f"'{path}' is not a readable checkpoint (truncated, or another file type).")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(
            f"'{path}' holds objects other than weights and plain values; it was not loaded, since "
            "loading it could run code. Use a checkpoint written by linreg_pl."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
        raise InputError(f"'{path}' is not a readable checkpoint (truncated or another file type: {error}).") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InputError(f"'{path}' is not a Lightning checkpoint (no state_dict); use a .ckpt written by linreg_pl.")
    return checkpoint


def check_matches(checkpoint: dict[str, Any], path: str | os.PathLike, model: L.LightningModule) -> None:
    """The checkpoint must hold a network of the same sizes and parameter shapes as ``model``'s
    (built for this data and ``--model.net``)."""
    saved = checkpoint["state_dict"]
    if not any(key.startswith("net.") for key in saved):
        raise InputError(f"'{path}' is not a linreg_pl LinearRegression checkpoint (no net.* weights).")
    hparams, sizes = checkpoint.get("hyper_parameters") or {}, ("n_features", "n_targets")
    if (trained := [hparams.get(k) for k in sizes]) != (wanted := [model.hparams[k] for k in sizes]):
        raise InputError(
            f"'{path}' is a model of {trained[0]} feature(s) and {trained[1]} target(s), but the data has "
            f"{wanted[0]} feature(s) and {wanted[1]} target(s); use a checkpoint trained on this data."
        )
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("net.")}
    if (found := {k: tuple(v.shape) for k, v in saved.items() if k.startswith("net.")}) != shapes:
        raise InputError(
            f"'{path}' holds another network (parameter shapes {found}) than model.net="
            f"{type(model.net).__name__} ({shapes}); give the --model.net of the run that wrote it."
        )


def resolve_checkpoint(ckpt_path: str | None, trainer: L.Trainer) -> str | None:
    """``"last"`` is the newest ``last.ckpt`` of this experiment in any version directory (each run
    logs to a new ``version_N``, where Lightning alone would look)."""
    if ckpt_path != "last":
        return ckpt_path
    logger = trainer.logger
    if logger is None:
        raise InputError("--ckpt_path last needs the logger's experiment folder; give a checkpoint path instead.")
    experiment = Path(logger.save_dir) / str(logger.name)
    candidates = sorted(experiment.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise InputError(
            f"--ckpt_path last: no last.ckpt under '{experiment}/version_*/checkpoints/'; train once without it first."
        )
    return str(candidates[-1])


def epochs_trained(checkpoint: dict[str, Any]) -> int:
    """The epochs whose training the checkpoint's run had finished. Lightning's loop progress
    counts them alike at an epoch's end and after training, where ``epoch`` is one more."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError):  # a checkpoint without Lightning's loops
        return checkpoint.get("epoch", -1) + 1


def check_resumable(checkpoint: dict[str, Any], path: str, trainer: L.Trainer, source: dict | None) -> None:
    """Resuming ``path`` (what ``--ckpt_path last`` found) trains something, on this experiment's data.

    Refused: a checkpoint of other data (``source``, the data source's config, differs from the one
    saved), and a finished run (all of ``--trainer.max_epochs`` trained), which would train nothing
    and leave an empty run behind.
    """
    saved = (checkpoint.get("datamodule_hyper_parameters") or {}).get("source")
    if source is not None and saved is not None and saved != source:
        raise InputError(
            f"--ckpt_path last found '{path}', which was trained on other data ({saved.get('class_path')} "
            f"{saved.get('init_args')}); give this experiment's checkpoint by its path, or start without --ckpt_path."
        )
    epochs_done = epochs_trained(checkpoint)
    if 0 <= trainer.max_epochs <= epochs_done:
        raise InputError(
            f"--ckpt_path last: '{path}' is a finished run (all {epochs_done} epochs of --trainer.max_epochs "
            f"{trainer.max_epochs} trained); resuming it trains nothing. Raise "
            "--trainer.max_epochs to train it further from that checkpoint, or start a new run without --ckpt_path."
        )
