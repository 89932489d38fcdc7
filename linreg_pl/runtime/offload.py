"""Work beside training: the methods of one object run in a forked child process, which the
operating system can put on a core that training leaves idle.

A lesson trains on one core; drawing its figures (matplotlib, a third of a lesson's time) can run
meanwhile. ``fork`` hands the child the drawing's data without a copy through a pipe and costs
milliseconds, where a fresh interpreter would import matplotlib again (~1 s). Where fork is not
the platform's way (macOS, Windows), or fails, ``offload`` runs the calls in-process, in order.

The child shares nothing with the parent but one socket: it closes every other file descriptor
it inherited (a pipe the parent waits on to close must not stay open in it), ends if the parent
dies (``PR_SET_PDEATHSIG``, and the socket's end), never runs the parent's signal handlers (Ctrl-C
is the parent's to handle; SIGTERM ends it) and leaves with ``os._exit``, so that no atexit
handler or finalizer of the parent runs twice. It builds its object and touches nothing else of
the parent's: no torch (an OpenMP pool does not survive fork), no logger, no file.
"""

from __future__ import annotations

import ctypes
import gc
import os
import pickle
import signal
import socket
import struct
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1  # linux/prctl.h
_LENGTH = struct.Struct("!Q")


class OffloadFailed(RuntimeError):
    """The child process died, gave no answer in time, or raised (its traceback is the message)."""


def offload(make: Callable[[], Any], timeout_s: float = 10.0) -> Offloaded | InProcess:
    """The object ``make()`` builds, in a forked child process on Linux, else in this process."""
    if sys.platform == "linux":
        try:
            return Offloaded(make, timeout_s)
        except OSError:  # no process to spare (EAGAIN, ENOMEM): draw here
            pass
    return InProcess(make())


class InProcess:
    """``Offloaded``'s interface, calling the object in this process."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def send(self, method: str, *args: Any) -> None:
        """Call ``target.method(*args)``."""
        getattr(self.target, method)(*args)

    def ask(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        """``target.method(*args)``."""
        return getattr(self.target, method)(*args)

    def close(self) -> None:
        """Nothing to end."""


class Offloaded:
    """Calls to the object ``make()`` builds in a forked child, in order: ``send`` queues one,
    ``ask`` queues one and waits for its result.

    Neither waits longer than ``timeout_s`` for the child (a full socket, a late answer). Once the
    child has failed it is ended, ``send`` does nothing and ``ask`` raises ``OffloadFailed``:
    training goes on, and the caller does the work itself.
    """

    def __init__(self, make: Callable[[], Any], timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self.failure: str | None = None
        self.exitcode: int | None = None  # once ended: its exit status, or minus the signal that ended it
        ours, theirs = socket.socketpair()
        parent = os.getpid()
        # A signal between the fork and the child's own handlers would run the parent's handler there.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            with warnings.catch_warnings():
                # Python 3.12+: the parent has threads (torch's, TensorBoard's writer); the child uses none.
                warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
                self.pid = os.fork()
            if self.pid == 0:
                _serve(theirs, make, parent)  # never returns
        except BaseException:
            ours.close()
            theirs.close()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        theirs.close()
        ours.settimeout(timeout_s)
        self.socket = ours

    def send(self, method: str, *args: Any) -> None:
        """Queue ``method(*args)``."""
        self._send((method, args, False))

    def ask(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        """``method(*args)``'s result, waiting at most ``timeout_s`` (default: the worker's)."""
        self._send((method, args, True))
        if self.failure is None:
            try:
                self.socket.settimeout(timeout_s or self.timeout_s)
                error, result = _receive(self.socket)
                if error is None:
                    return result
                self._fail(error)
            except TimeoutError:
                self._fail(f"no answer to {method} in {timeout_s or self.timeout_s:g} s")
            except (EOFError, OSError):
                self._fail(f"the drawing process ended before answering {method}")
        raise OffloadFailed(self.failure)

    def close(self) -> None:
        """End the child (it reads the end of the socket) and reap it; idempotent."""
        if self.exitcode is not None:
            return
        try:
            self.socket.shutdown(socket.SHUT_WR)
            self.socket.settimeout(self.timeout_s)
            while self.socket.recv(65536):  # the rest of any answer, then the end of the child's side
                pass
        except OSError:  # a timeout (stuck), or the child is gone already
            os.kill(self.pid, signal.SIGKILL)
        self.socket.close()
        _, status = os.waitpid(self.pid, 0)
        self.exitcode = os.waitstatus_to_exitcode(status)

    def _send(self, message: tuple) -> None:
        if self.failure is not None:
            return
        try:
            self.socket.settimeout(self.timeout_s)
            _write(self.socket, message)
        except OSError as error:  # a timeout (the child is stuck), or a broken pipe (it died)
            self._fail(f"cannot reach the drawing process: {error or type(error).__name__}")

    def _fail(self, why: str) -> None:
        self.failure = why
        os.kill(self.pid, signal.SIGKILL)  # stuck or broken: nothing more to wait for
        self.close()


def _write(connection: socket.socket, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    connection.sendall(_LENGTH.pack(len(data)) + data)


def _receive(connection: socket.socket) -> Any:
    (length,) = _LENGTH.unpack(_read_exactly(connection, _LENGTH.size))
    return pickle.loads(_read_exactly(connection, length))


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = connection.recv(min(size - len(data), 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the socket")
        data += chunk
    return bytes(data)


def _serve(connection: socket.socket, make: Callable[[], Any], parent: int) -> None:
    """The child: build the object, then run each call the parent sends until the socket ends."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)
        for signum in set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}:
            if callable(signal.getsignal(signum)):
                signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.set_wakeup_fd(-1)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        keep = connection.fileno()
        os.closerange(3, keep)
        os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        # What the parent held at the fork, its pending garbage included, is never finalized here.
        gc.freeze()
        error, target = None, None
        try:
            target = make()
        except BaseException:
            error = traceback.format_exc()
        while True:
            try:
                method, args, reply = _receive(connection)
            except (EOFError, OSError):
                break
            result = None
            if error is None:
                try:
                    result = getattr(target, method)(*args)
                except BaseException:
                    error = traceback.format_exc()
            if reply:
                _write(connection, (error, result))
    except BaseException:
        os._exit(1)
    os._exit(0)
