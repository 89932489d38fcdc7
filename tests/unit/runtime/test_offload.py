"""linreg_pl.runtime.offload: an object's methods run in a forked child, and every failure of the
child comes back as OffloadFailed, never as a hang or a lost process."""

import multiprocessing
import os
import signal
import sys

import pytest

from linreg_pl.runtime.offload import InProcess, Offloaded, OffloadFailed, offload

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="offload forks on Linux only")


class Tally:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def add(self, value: int) -> None:
        self.seen.append(value)

    def report(self) -> tuple[int, list[int]]:
        return os.getpid(), self.seen

    def fail(self) -> None:
        raise ValueError("drawing went wrong")

    def die(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture
def tally():
    worker = offload(Tally)
    yield worker
    worker.close()
    assert not worker.process.is_alive() and multiprocessing.active_children() == []


def test_calls_run_in_order_in_another_process(tally):
    assert isinstance(tally, Offloaded)
    for value in range(5):
        tally.send("add", value)
    pid, seen = tally.ask("report")
    assert pid != os.getpid() and pid == tally.process.pid
    assert seen == [0, 1, 2, 3, 4]


def test_an_error_in_the_child_comes_back_with_its_traceback(tally):
    tally.send("fail")
    with pytest.raises(OffloadFailed, match="ValueError: drawing went wrong"):
        tally.ask("report")
    tally.send("add", 1)  # never raises: training goes on
    with pytest.raises(OffloadFailed, match="drawing went wrong"):
        tally.ask("report")
    assert not tally.process.is_alive()


def test_a_child_that_dies_is_reported_not_waited_for(tally):
    tally.send("die")
    with pytest.raises(OffloadFailed, match="ended"):
        tally.ask("report")
    assert tally.process.exitcode == -signal.SIGKILL
    tally.send("add", 1)


def test_ctrl_c_is_left_to_the_parent(tally):
    tally.ask("report")  # the child is serving, its handlers set
    os.kill(tally.process.pid, signal.SIGINT)
    tally.send("add", 7)
    assert tally.ask("report")[1] == [7]


def test_sigterm_ends_the_child(tally):
    tally.ask("report")
    os.kill(tally.process.pid, signal.SIGTERM)
    tally.process.join(timeout=10)
    assert tally.process.exitcode == -signal.SIGTERM
    with pytest.raises(OffloadFailed):
        tally.ask("report")


def test_a_child_that_does_not_answer_is_ended(monkeypatch):
    worker = offload(Tally, timeout_s=0.5)
    try:
        worker.send("add", 1)
        os.kill(worker.process.pid, signal.SIGSTOP)  # it can answer nothing
        with pytest.raises(OffloadFailed, match="no answer to report in 0.5 s"):
            worker.ask("report")
        assert not worker.process.is_alive()
    finally:
        worker.close()


def test_without_fork_the_calls_run_here(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    worker = offload(Tally)
    assert isinstance(worker, InProcess)
    worker.send("add", 3)
    assert worker.ask("report") == (os.getpid(), [3])
    with pytest.raises(ValueError, match="drawing went wrong"):  # the error itself, where it happened
        worker.ask("fail")


ORPHAN = """
import os, signal
from linreg_pl.runtime.offload import offload
worker = offload(list)
worker.ask("copy")  # serving
print(worker.process.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_child_ends_when_its_parent_is_killed():
    import subprocess
    import time

    ran = subprocess.run([sys.executable, "-c", ORPHAN], capture_output=True, text=True, timeout=60)
    assert ran.returncode == -signal.SIGKILL, ran.stderr
    child = int(ran.stdout.split()[0])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{child}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":  # ended, not yet reaped by init
                    return
        except FileNotFoundError:
            return
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    raise AssertionError(f"the child {child} outlived its killed parent by 30 s")
