"""Work beside training: the methods of one object run in a forked child process, on a core that
training leaves free.

A lesson trains on one core; drawing its figures (matplotlib, a third of a lesson's time) can use
another meanwhile. ``fork`` hands the child the drawing's data without a copy through a pipe and
costs milliseconds, where a fresh interpreter would import matplotlib again (~1 s). Where fork is
not the platform's way (macOS, Windows), ``offload`` runs the calls in-process, in order, instead.

The child builds its object and touches nothing else of the parent's: no torch (an OpenMP pool
does not survive fork), no logger, no file the parent writes. It ignores Ctrl-C, which is the
parent's to handle (it then asks for what was reached), dies on SIGTERM like any process, and ends
when the parent closes the pipe or dies.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any


class OffloadFailed(RuntimeError):
    """The child process died, gave no answer in time, or raised (its traceback is the message)."""


def offload(make: Callable[[], Any], timeout_s: float = 120.0) -> Offloaded | InProcess:
    """The object ``make()`` builds, in a forked child process on Linux, else in this process."""
    if sys.platform != "linux":
        return InProcess(make())
    return Offloaded(make, timeout_s)


class InProcess:
    """``Offloaded``'s interface, calling the object here."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def send(self, method: str, *args) -> None:
        getattr(self.target, method)(*args)

    def ask(self, method: str, *args) -> Any:
        return getattr(self.target, method)(*args)

    def close(self) -> None:
        pass


class Offloaded:
    """Calls to the object ``make()`` builds in a forked child: ``send`` queues a call, ``ask``
    queues one and waits for its result. Calls run in order. Once the child has failed, every
    later ``ask`` raises ``OffloadFailed``; ``send`` never raises, so that training goes on."""

    def __init__(self, make: Callable[[], Any], timeout_s: float = 120.0) -> None:
        self.timeout_s = timeout_s
        context = multiprocessing.get_context("fork")
        ours, theirs = context.Pipe()
        with warnings.catch_warnings():
            # Python 3.12+: the parent has threads (torch's, TensorBoard's writer); the child uses none.
            warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
            self.process = context.Process(target=_serve, args=(theirs, ours, make), daemon=True)
            self.process.start()
        theirs.close()  # the child's end: once the child is gone, reading ours sees the end of the pipe
        self.connection = ours
        self.failure: str | None = None

    def send(self, method: str, *args) -> None:
        self._send(method, args, reply=False)

    def ask(self, method: str, *args) -> Any:
        self._send(method, args, reply=True)
        if self.failure is None:
            try:
                if not self.connection.poll(self.timeout_s):
                    self.process.kill()  # stuck: nothing to wait for
                    self._fail(f"no answer to {method} in {self.timeout_s:g} s")
                else:
                    error, result = self.connection.recv()
                    if error is None:
                        return result
                    self._fail(error)
            except (EOFError, OSError):
                self.process.join(timeout=1)
                self._fail(f"the process ended (exit status {self.process.exitcode})")
        raise OffloadFailed(self.failure)

    def close(self) -> None:
        """End the child (it sees the end of the pipe) and wait for it; idempotent."""
        self.connection.close()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()

    def _send(self, method: str, args: tuple, reply: bool) -> None:
        if self.failure is not None:
            return
        try:
            self.connection.send((method, args, reply))
        except (OSError, ValueError):  # a broken pipe: the child died
            self._fail(f"the process ended before {method}")

    def _fail(self, why: str) -> None:
        self.failure = why
        self.close()


def _serve(connection: Connection, parents_end: Connection, make: Callable[[], Any]) -> None:
    parents_end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # What the parent held at the fork, its pending garbage included, is never finalized here: a
    # finalizer could flush a buffer of the parent's files a second time.
    gc.freeze()
    error, target = None, None
    try:
        target = make()
    except BaseException:
        error = traceback.format_exc()
    while True:
        try:
            method, args, reply = connection.recv()
        except (EOFError, OSError):
            break
        result = None
        if error is None:
            try:
                result = getattr(target, method)(*args)
            except BaseException:
                error = traceback.format_exc()
        if reply:
            connection.send((error, result))
    os._exit(0)  # nothing of the parent's (atexit handlers, loggers) runs twice
