"""linreg_pl.runtime.offload: an object's methods run in a forked child, and every failure of the
child comes back as OffloadFailed, never as a hang or a process left behind."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from linreg_pl.runtime.offload import InProcess, Offloaded, OffloadFailed, offload

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="offload forks on Linux only")


class Tally:
    def __init__(self) -> None:
        self.seen: list = []

    def add(self, value) -> None:
        self.seen.append(value)

    def report(self) -> tuple[int, list]:
        return os.getpid(), self.seen

    def fail(self) -> None:
        raise ValueError("drawing went wrong")

    def die(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def niceness(self) -> int:
        return os.nice(0)

    def descriptors(self) -> list[str]:
        return sorted(os.listdir("/proc/self/fd"), key=int)


def ended(pid: int) -> bool:
    """Whether ``pid`` is gone or a zombie (ended, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def tally():
    worker = offload(Tally, timeout_s=5)
    yield worker
    worker.close()
    assert ended(worker.pid) and worker.exitcode is not None


def test_calls_run_in_order_in_another_process(tally):
    assert isinstance(tally, Offloaded)
    for value in range(5):
        tally.send("add", value)
    tally.send("add", np.arange(300_000))  # more than a socket buffer holds
    pid, seen = tally.ask("report")
    assert pid == tally.pid != os.getpid()
    assert seen[:5] == [0, 1, 2, 3, 4] and np.array_equal(seen[5], np.arange(300_000))
    tally.close()
    assert tally.exitcode == 0


def test_the_child_holds_no_descriptor_of_the_parent_but_its_socket(tally):
    read, write = os.pipe()  # a pipe someone waits on to close (runtime.signals' wake-up pipe)
    try:
        worker = offload(Tally)
        try:
            descriptors = worker.ask("descriptors")
            # /dev/null as 0, 1 and 2, the socket, and the listing's own descriptor.
            assert descriptors[:3] == ["0", "1", "2"] and len(descriptors) == 5
            assert str(read) not in descriptors and str(write) not in descriptors
        finally:
            worker.close()
    finally:
        os.close(read)
        os.close(write)


def test_an_error_in_the_child_comes_back_with_its_traceback(tally):
    tally.send("fail")
    with pytest.raises(OffloadFailed, match="ValueError: drawing went wrong"):
        tally.ask("report")
    tally.send("add", 1)  # does nothing: training goes on
    with pytest.raises(OffloadFailed, match="drawing went wrong"):
        tally.ask("report")
    assert ended(tally.pid)


def test_wait_returns_once_the_calls_sent_have_run_and_reports_their_failure(tally):
    tally.send("add", 1)
    tally.wait()
    assert tally.ask("report")[1] == [1]
    tally.send("fail")
    with pytest.raises(OffloadFailed, match="ValueError: drawing went wrong"):
        tally.wait()
    in_process = InProcess(Tally())
    in_process.send("add", 2)
    in_process.wait()
    assert in_process.ask("report")[1] == [2]


def test_a_child_that_dies_is_reported_not_waited_for(tally):
    tally.send("die")
    with pytest.raises(OffloadFailed, match="ended before answering report"):
        tally.ask("report")
    assert tally.exitcode == -signal.SIGKILL
    tally.send("add", 1)


def test_ctrl_c_is_left_to_the_parent(tally):
    tally.ask("report")  # the child is serving, its handlers set
    os.kill(tally.pid, signal.SIGINT)
    tally.send("add", 7)
    assert tally.ask("report")[1] == [7]


def test_sigterm_ends_the_child(tally):
    tally.ask("report")
    os.kill(tally.pid, signal.SIGTERM)
    with pytest.raises(OffloadFailed):
        tally.ask("report")
    assert tally.exitcode == -signal.SIGTERM


def test_a_stuck_child_is_ended_and_never_blocks_a_send():
    worker = offload(Tally, timeout_s=0.5)
    try:
        worker.ask("report")
        os.kill(worker.pid, signal.SIGSTOP)  # it can read nothing and answer nothing
        for _ in range(20):  # far more than the socket holds
            worker.send("add", np.zeros(100_000))
        assert worker.failure is not None and "cannot reach" in worker.failure
        with pytest.raises(OffloadFailed, match="cannot reach"):
            worker.ask("report")
        assert worker.exitcode == -signal.SIGKILL
    finally:
        worker.close()


def test_a_late_answer_is_given_up(tally):
    tally.ask("report")
    os.kill(tally.pid, signal.SIGSTOP)
    with pytest.raises(OffloadFailed, match="no answer to report in 0.2 s"):
        tally.ask("report", timeout_s=0.2)
    assert tally.exitcode == -signal.SIGKILL


def test_without_fork_the_calls_run_here(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    worker = offload(Tally)
    assert isinstance(worker, InProcess)
    worker.send("add", 3)
    assert worker.ask("report") == (os.getpid(), [3])
    with pytest.raises(ValueError, match="drawing went wrong"):  # the error itself, where it happened
        worker.ask("fail")


def test_a_fork_that_fails_leaves_the_calls_here(monkeypatch):
    def no_fork():
        raise BlockingIOError("Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    worker = offload(Tally)
    assert isinstance(worker, InProcess) and worker.ask("report")[0] == os.getpid()


# The parent loads offload.py by itself (it imports the standard library only): importing the
# package would import Lightning, seconds of start-up that have nothing to do with the child.
ORPHAN = """
import importlib.util, os, signal, sys
spec = importlib.util.spec_from_file_location("offload", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
worker = module.offload(list)
worker.ask("copy")  # serving
print(worker.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_child_ends_when_its_parent_is_killed():
    source = sys.modules[offload.__module__].__file__
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN, source], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert parent.wait(timeout=120) == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while not ended(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not ended(child):
        os.kill(child, signal.SIGKILL)
        raise AssertionError(f"the child {child} outlived its killed parent by 30 s")


def test_the_child_runs_at_the_lowest_priority_and_the_parent_keeps_its_own(tally):
    # Beside training at equal priority, drawing slowed training by more than it took.
    assert tally.ask("niceness") == 19
    assert os.nice(0) < 19  # the parent, which trains, keeps its own
