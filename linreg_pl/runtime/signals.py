"""SIGTERM and Ctrl-C: every process stops at the same training step, never a hang.

Lightning 2.6's own SIGTERM handler runs a ``dist.broadcast`` inside the signal handler, which can
meet a different collective on the other rank (a deadlock, Lightning issue #20806), and a Ctrl-C
reaches each rank at a different step, so an exception path with a barrier (saving last.ckpt)
waits forever. ``GracefulStop`` replaces both: its handler only records the signal, and the ranks
agree to stop at a training-batch boundary through one small all-reduce every ``check_every_s``.
A watchdog ends the process if the stop takes longer than ``grace_s``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import lightning as L
import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.callbacks import Callback

from linreg_pl.errors import InputError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEATH_NOTICE_S = 1.0


class Interrupted(SystemExit):
    """The run stopped on ``signum``: exits with status ``128 + signum``, as a shell reports it.

    Examples
    --------
    >>> Interrupted(signal.SIGTERM).code, Interrupted(signal.SIGINT).code
    (143, 130)
    """

    def __init__(self, signum: int, status: int | None = None, at_agreed_step: bool = False) -> None:
        super().__init__(128 + signum if status is None else status)
        self.signum = signum
        # Raised by every rank at the same training step (GracefulStop), where a collective such
        # as a checkpoint's barrier is safe; else by one process wherever the signal found it.
        self.at_agreed_step = at_agreed_step


class GracefulStop(Callback):
    """On SIGTERM or SIGINT, stop every process at the same training step with ``Interrupted``.

    Parameters
    ----------
    check_every_s : float
        Under DDP, how often (in seconds of training) the ranks compare notes with one all-reduce
        of two integers; its cost is then one collective per interval instead of one per step.
        Alone, a process checks every batch for free.
    grace_s : float
        A process that has not stopped this long after the signal (stuck in I/O, in validation
        under DDP, or in a collective with a dead peer) exits at once, killing the ranks it launched.
        A second signal exits at once too.
    """

    def __init__(self, check_every_s: float = 0.5, grace_s: float = 20.0) -> None:
        if not check_every_s >= 0:
            raise InputError(f"GracefulStop check_every_s={check_every_s} must be >= 0 (0 checks every step).")
        if not grace_s > 0:
            raise InputError(f"GracefulStop grace_s={grace_s} must be > 0 seconds.")
        self.check_every_s = check_every_s
        self.grace_s = grace_s
        self.signum: int | None = None
        self._children: list[subprocess.Popen] = []
        self._steps_to_check = 1
        self._interval = 1
        self._last_check: float | None = None
        self._watchdog: threading.Timer | None = None

    # Lightning installs its own SIGTERM handler after ``setup`` and restores the previous
    # handlers when the stage ends, so ours goes in at the start of every stage.
    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install(trainer)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install(trainer)

    def _install(self, trainer: L.Trainer) -> None:
        # The ranks that Lightning's launcher started (rank 0's children under strategy="ddp").
        self._children = list(getattr(getattr(trainer.strategy, "launcher", None), "procs", []))
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only record: a collective or a file write here could interleave with the one the main
        # thread was in when the signal arrived.
        if self.signum is not None:
            self._exit_now(signum, "a second signal")
        self.signum = signum
        self._watchdog = threading.Timer(
            self.grace_s, self._exit_now, (signum, f"still running {self.grace_s:g} s after it")
        )
        self._watchdog.daemon = True
        self._watchdog.start()

    def _exit_now(self, signum: int, why: str) -> None:
        name = signal.Signals(signum).name
        os.write(2, f"error: {name}: {why}; exiting without saving (pid {os.getpid()})\n".encode())
        for child in self._children:
            child.kill()
        os._exit(128 + signum)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.world_size == 1 or not dist.is_initialized():
            self._stop_if_signalled(trainer, self.signum)
            return
        self._steps_to_check -= 1
        if self._steps_to_check > 0:
            return
        # Every rank runs the same training steps, so every rank reaches this all-reduce at the
        # same step; the maximum of the proposals is the same next interval everywhere.
        now = time.monotonic()
        proposal = 1.0
        if self._last_check is not None:  # as many steps as took check_every_s lately
            proposal = self.check_every_s * self._interval / max(now - self._last_check, 1e-9)
        state = torch.tensor([self.signum or 0, max(1, int(proposal))], device=trainer.strategy.root_device)
        dist.all_reduce(state, op=dist.ReduceOp.MAX)
        signum, self._interval = state.tolist()
        self._steps_to_check, self._last_check = self._interval, now
        self._stop_if_signalled(trainer, signum)

    def _eval_batch_start(self, trainer: L.Trainer) -> None:
        # Evaluation has no per-step collective to agree on; under DDP it runs to its end (or the
        # watchdog ends it) and training stops at its next batch.
        if trainer.world_size == 1:
            self._stop_if_signalled(trainer, self.signum)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch_start(trainer)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch_start(trainer)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch_start(trainer)

    def _stop_if_signalled(self, trainer: L.Trainer, signum: int | None) -> None:
        if not signum:
            return
        # Lightning's launcher kills itself (rank 0) when one of its children exits with a
        # non-zero status; the ranks it started therefore exit 0 and rank 0 reports the signal.
        launched_child = trainer.local_rank > 0 and isinstance(
            getattr(trainer.strategy, "cluster_environment", None), LightningEnvironment
        )
        if self._children:
            atexit.register(self._reap_children)
        raise Interrupted(signum, 0 if launched_child else None, at_agreed_step=True)

    def _reap_children(self) -> None:
        """At exit of the launching process: give its ranks ``grace_s`` to finish, then kill them,
        so no rank outlives the command."""
        deadline = time.monotonic() + self.grace_s
        for child in self._children:
            try:
                child.wait(timeout=max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                child.kill()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Rank 0 learns of a dead rank as a gloo "connection reset" traceback: name the culprit.
        # The reset can arrive a moment before the dead process is reaped, hence the short wait.
        if isinstance(exception, Interrupted):
            if trainer.world_size == 1 and self._watchdog is not None:
                # Alone, the stop is on its way out with no collective to hang in: the watchdog
                # would only end a caller that goes on (a notebook, a test run in-process).
                self._watchdog.cancel()
                self._watchdog, self.signum = None, None
            return
        deadline = time.monotonic() + DEATH_NOTICE_S
        for rank, child in enumerate(self._children, start=1):
            try:
                returncode = child.wait(timeout=max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                continue
            if returncode:
                print(
                    f"error: rank {rank} (pid {child.pid}) ended with {_describe(returncode)}; rank 0 stops too",
                    file=sys.stderr,
                )
                self._leave(trainer)  # the line says it all: no gloo traceback of this rank after it
        if trainer.world_size > 1 and isinstance(exception, RuntimeError) and _PEER_LOST in str(exception):
            print(f"error: rank {trainer.global_rank} lost a peer rank (it ended); stopping too", file=sys.stderr)
            self._leave(trainer)

    def _leave(self, trainer: L.Trainer) -> None:
        """Exit 1 now, the logs flushed and the ranks this process launched ended. A lost peer leaves
        the process group's threads running: Python's own exit would tear them down mid-use and end
        in C++'s terminate (SIGABRT) after the line was said."""
        for logger in trainer.loggers:
            logger.finalize("failed")  # what Lightning does after this hook, which does not return
        sys.stdout.flush()
        sys.stderr.flush()
        for child in self._children:
            child.kill()
        os._exit(1)


# How gloo reports a collective whose peer process has ended.
_PEER_LOST = "Connection reset by peer"


@contextlib.contextmanager
def stop_on_signals(grace_s: float = 10.0) -> Iterator[None]:
    """For a whole command, start-up and end included: SIGINT and SIGTERM raise ``Interrupted`` in
    the main thread (``GracefulStop`` replaces this while a stage runs); the processes this one
    started (the DDP ranks Lightning launched) are then given ``grace_s`` to end and killed.

    A main thread inside C (waiting for the other ranks to join the process group, say) runs no
    Python handler; a watcher thread, woken through ``signal.set_wakeup_fd`` whatever the main
    thread does, then ends the process and its children ``grace_s`` after the signal. The previous
    handlers come back when the block ends: a caller in-process (a test) keeps its own.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    reader, writer = os.pipe()
    os.set_blocking(writer, False)
    previous_fd = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
    timers: list[threading.Timer] = []  # armed by the watcher; a block that ended in time disarms them
    watcher = threading.Thread(
        target=_watch, args=(reader, grace_s, timers), daemon=True, name="linreg_pl-signal-watcher"
    )
    watcher.start()
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_interrupted)
    try:
        yield
    except Interrupted as stop:
        # At an agreed step every rank is stopping already (and saving); else the signal reached
        # this one alone, before anything worth saving: its ranks end now, before they notice
        # (a rank waiting for this one in C++ would print a stack trace when it goes).
        _end_children(grace_s if stop.at_agreed_step else 0)
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(writer)  # the watcher reads end-of-file and returns
        watcher.join()
        os.close(reader)
        for timer in timers:
            timer.cancel()
            timer.join()


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def _watch(reader: int, grace_s: float, timers: list[threading.Timer]) -> None:
    """Until the pipe closes: ``grace_s`` after a stop signal, if the process still runs, end it."""
    while data := os.read(reader, 16):
        signums = [s for s in data if s in STOP_SIGNALS]
        if signums:
            timer = threading.Timer(grace_s, _exit_after_grace, (signums[0], grace_s))
            timer.daemon = True
            timer.start()
            timers.append(timer)


def _exit_after_grace(signum: int, grace_s: float) -> None:
    name = signal.Signals(signum).name
    os.write(2, f"error: {name}: still running {grace_s:g} s after it; exiting (pid {os.getpid()})\n".encode())
    _end_children(0)
    os._exit(128 + signum)


def _end_children(grace_s: float) -> None:
    """Give this process's children ``grace_s`` to end, then kill them: no rank outlives its launcher."""
    deadline = time.monotonic() + grace_s
    while (children := _children()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _children() -> list[int]:
    """Live child processes of this one (Linux /proc; elsewhere none are found)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rpartition(")")[2].split()[:2]
        except (OSError, ValueError):
            continue
        if int(ppid) == os.getpid() and state != "Z":
            found.append(int(stat.parent.name))
    return found


def _describe(returncode: int) -> str:
    """``-9`` -> ``'signal SIGKILL'``, ``1`` -> ``'exit status 1'``.

    Examples
    --------
    >>> _describe(-9), _describe(1)
    ('signal SIGKILL', 'exit status 1')
    """
    return f"signal {signal.Signals(-returncode).name}" if returncode < 0 else f"exit status {returncode}"
