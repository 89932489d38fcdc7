"""Work beside training: the methods of one object run in a forked child process, which the
operating system can put on a core that training leaves idle.

A lesson trains on one core; drawing its figures (matplotlib, a third of a lesson's time) can run
meanwhile, at the lowest priority (nice 19): beside training at equal priority it slowed training
down by more than the drawing took (line, 2 cores: fit 2.0-2.4 s against 1.2-1.3 s without the
figures); now it takes what training leaves, and draws the rest once training is done. ``fork``
hands the child the drawing's data without a copy through a pipe and costs milliseconds, where a
fresh interpreter would import matplotlib again (~1 s). Where fork is not the platform's way
(macOS, Windows), or fails, ``offload`` runs the calls in-process, in order.

The child shares nothing with the parent but one socket: it closes every other file descriptor
it inherited (a pipe the parent waits on to close must not stay open in it), ends if the parent
dies (``PR_SET_PDEATHSIG``, and the socket's end), never runs the parent's signal handlers (Ctrl-C
is the parent's to handle; SIGTERM ends it) and leaves with ``os._exit``, so that no atexit
handler or finalizer of the parent runs twice. It builds its object and touches nothing else of
the parent's: no torch (an OpenMP pool does not survive fork), no logger, no open file (the object
opens its own).
"""

from __future__ import annotations

import contextlib
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

    def wait(self, timeout_s: float | None = None) -> None:
        """Nothing to wait for: every call has run."""

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
        parent, prctl = os.getpid(), ctypes.CDLL(None, use_errno=True).prctl
        # A signal between the fork and the child's own handlers would run the parent's handler there.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            with warnings.catch_warnings():
                # Python 3.12+: the parent has threads (torch's, TensorBoard's writer); the child uses none.
                warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
                self.pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            ours.close()
            theirs.close()
            raise
        if self.pid == 0:
            try:
                _serve(theirs, make, parent, prctl)
            finally:
                os._exit(1)  # _serve leaves with os._exit: this only if it raised
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        theirs.close()
        ours.settimeout(timeout_s)
        self.socket = ours

    def send(self, method: str, *args: Any) -> None:
        """Queue ``method(*args)``."""
        self._send((method, args, False))

    def ask(self, method: str | None, *args: Any, timeout_s: float | None = None) -> Any:
        """``method(*args)``'s result (None: no call, the calls sent before have run), waiting at
        most ``timeout_s`` (default: the worker's) to send and again to receive."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        self._send((method, args, True), timeout_s)
        if self.failure is None:
            try:
                self.socket.settimeout(timeout_s)
                error, result = _receive(self.socket)
                if error is None:
                    return result
                self._fail(error)
            except TimeoutError:
                self._fail(f"no answer to {method} in {timeout_s:g} s")
            except (EOFError, OSError):
                self._fail(f"the drawing process ended before answering {method}")
            except Exception as error:  # a garbled answer
                self._fail(f"unreadable answer to {method}: {error!r}")
            except BaseException:  # Ctrl-C while waiting: the stream is half read, and of no more use
                self._fail(f"interrupted while waiting for {method}")
                raise
        raise OffloadFailed(self.failure)

    def wait(self, timeout_s: float | None = None) -> None:
        """Wait until every call sent has run; ``OffloadFailed`` if one raised (or as ``ask``)."""
        self.ask(None, timeout_s=timeout_s)

    def close(self) -> None:
        """End the child (it reads the end of the socket) and reap it; idempotent."""
        if self.exitcode is not None:
            return
        self.failure = self.failure or "closed"
        try:
            self.socket.shutdown(socket.SHUT_WR)
            self.socket.settimeout(self.timeout_s)
            while self.socket.recv(65536):  # the rest of any answer, then the end of the child's side
                pass
        except OSError:  # a timeout (stuck), or the child is gone already
            self._kill()
        self.socket.close()
        try:
            _, status = os.waitpid(self.pid, 0)
            self.exitcode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:  # reaped by someone else (SIGCHLD ignored)
            self.exitcode = -1

    def _send(self, message: tuple, timeout_s: float | None = None) -> None:
        if self.failure is not None:
            return
        try:
            self.socket.settimeout(self.timeout_s if timeout_s is None else timeout_s)
            _write(self.socket, message)
        except OSError as error:  # a timeout (the child is stuck), or a broken pipe (it died)
            self._fail(f"cannot reach the drawing process: {str(error) or type(error).__name__}")
        except BaseException:  # Ctrl-C mid-message: the stream is of no more use
            self._fail("interrupted while sending")
            raise

    def _fail(self, why: str) -> None:
        if self.exitcode is not None:
            return
        self.failure = why
        self._kill()  # stuck or broken: nothing more to wait for
        self.close()

    def _kill(self) -> None:
        if self.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


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


def _serve(connection: socket.socket, make: Callable[[], Any], parent: int, prctl: Callable) -> None:
    """The child: build the object, then run each call the parent sends until the socket ends."""
    try:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)
        for signum in set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}:
            if callable(signal.getsignal(signum)):
                signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.set_wakeup_fd(-1)
        if connection.fileno() <= 2:  # the parent ran with a standard stream closed
            connection = socket.socket(fileno=os.dup(connection.fileno()))
        connection.settimeout(None)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        keep = {0, 1, 2, connection.fileno()}
        for fd in map(int, os.listdir("/proc/self/fd")):  # closerange could walk to a limit of 2^30
            if fd not in keep:
                with contextlib.suppress(OSError):  # the listing's own descriptor, closed already
                    os.close(fd)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.nice(19)  # training first: the child takes the CPU that training leaves
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
            if error is None and method is not None:
                try:
                    result = getattr(target, method)(*args)
                except BaseException:
                    error = traceback.format_exc()
            if reply:
                _write(connection, (error, result))
    except BaseException:
        os._exit(1)
    os._exit(0)
