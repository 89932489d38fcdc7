"""Faults: signals and a dead rank under 2-process CPU DDP, stale partial files, run directories
that two runs could share, and the empty directory of a failed start."""

import json
import os
import re
import signal
import subprocess
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from linreg_pl.errors import InputError
from linreg_pl.runtime.runs import claim_run_dir
from linreg_pl.runtime.signals import Interrupted
from tests.helpers import CONFIGS, QUIET, script_command, wait_for_epochs

# Slow enough (lr 0.001, 200 epochs) to be interrupted mid-run on two processes.
LONG_DDP_RUN = [
    "--config",
    str(CONFIGS / "trainer" / "ddp_cpu.yaml"),
    "--trainer.max_epochs=200",
    "--model.optimizer.lr=0.001",
    *QUIET,
]
STOP_DEADLINE_S = 30


def live_members(group: int) -> list[int]:
    """Pids of the process group's processes that have not ended (zombies count as ended)."""
    members = []
    for entry in Path("/proc").iterdir():
        try:
            state, _, pgrp = (entry / "stat").read_text().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):  # not a process, or it ended while being read
            continue
        if int(pgrp) == group and state != "Z":
            members.append(int(entry.name))
    return members


def rank_1(group: int) -> int:
    """Rank 1 among the group's processes: the one Lightning started with LOCAL_RANK=1. The others
    are the launcher (rank 0) and the process beside it that draws the fit snapshots."""
    (pid,) = [pid for pid in live_members(group) if b"LOCAL_RANK=1\0" in Path(f"/proc/{pid}/environ").read_bytes()]
    return pid


def drawing(group: int) -> list[int]:
    """The group's processes forked by the launcher (the figure drawing, linreg_pl.runtime.offload)."""
    children = []
    for pid in live_members(group):
        parent = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        if parent == group and b"LOCAL_RANK=" not in Path(f"/proc/{pid}/environ").read_bytes():
            children.append(pid)
    return children


def wait_until_all_ended(process: subprocess.Popen, deadline_s: float) -> float:
    """Poll (bounded) until the launcher and every process of its group have ended; the seconds taken."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if process.poll() is not None and not live_members(process.pid):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"still running {deadline_s} s after the fault: {live_members(process.pid)}")


@pytest.fixture
def ddp_run(tmp_path):
    """Start the long DDP run in its own process group (like a terminal job); kill what is left."""
    log = tmp_path / "output.txt"
    with open(log, "w") as output:
        process = subprocess.Popen(
            script_command("train.py", *LONG_DDP_RUN),
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    yield process, tmp_path / "logs/d2l/version_0/checkpoints/last.ckpt", log
    for pid in live_members(process.pid):
        os.kill(pid, signal.SIGKILL)
    process.kill()
    process.wait()


@pytest.mark.slow
@pytest.mark.parametrize(
    "target, signum",
    [("launcher", signal.SIGTERM), ("launcher", signal.SIGINT), ("group", signal.SIGINT)],
    ids=["sigterm-launcher", "sigint-launcher", "sigint-group"],
)
def test_a_signal_stops_every_rank_with_a_loadable_last_checkpoint(ddp_run, target, signum):
    process, last, log = ddp_run
    before = wait_for_epochs(last, process, epochs=2)
    # The launcher (rank 0), rank 1, and the process that draws rank 0's figures.
    assert sorted(live_members(process.pid)) == sorted({process.pid, rank_1(process.pid), *drawing(process.pid)})
    assert len(drawing(process.pid)) == 1
    if target == "launcher":
        process.send_signal(signum)
    else:  # Ctrl-C in a terminal: every process of the foreground group
        os.killpg(process.pid, signum)
    wait_until_all_ended(process, STOP_DEADLINE_S)
    assert process.returncode == 128 + signum, log.read_text()[-3000:]
    # The save on the signal names its step; the file holds that step. It may equal the periodic
    # save's step when the signal lands just after that save, before another step is taken.
    interrupted = re.search(r"interrupted at epoch (\d+), step (\d+): saved", log.read_text())
    assert interrupted, log.read_text()[-3000:]
    after = torch.load(last, weights_only=True)
    assert after["global_step"] == int(interrupted[2]) >= before["global_step"]


@pytest.mark.slow
def test_a_killed_rank_ends_rank_0_with_its_name(ddp_run):
    process, last, log = ddp_run
    wait_for_epochs(last, process, epochs=2)
    rank = rank_1(process.pid)
    os.kill(rank, signal.SIGKILL)
    wait_until_all_ended(process, STOP_DEADLINE_S)
    output = log.read_text()
    assert process.returncode == 1, output[-3000:]  # once -6 (SIGABRT) under load: keep what rank 0 said
    assert f"error: rank 1 (pid {rank}) ended with signal SIGKILL; rank 0 stops too" in output
    assert "Traceback" not in output and "[rank0]" not in output  # the one line, not gloo's traceback


def files_and_bytes(root: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.mark.slow
def test_partial_files_of_a_killed_save_are_removed_at_the_next_start(train_run, in_tmp):
    summary = train_run("--trainer.max_epochs=1")
    checkpoints = Path(summary["checkpoints"]["last"]).parent
    # What SIGKILL during a save leaves: the writer's pid is gone (beyond any pid_max).
    stale = checkpoints / ".best-epoch0-step80.ckpt.999999999.partial"
    stale.write_bytes(b"half a checkpoint")
    saving_now = checkpoints / f".last.ckpt.{os.getpid()}.partial"  # a live writer's file stays
    saving_now.write_bytes(b"being written")
    train_run("--trainer.max_epochs=2", f"--ckpt_path={summary['checkpoints']['last']}")
    assert not stale.exists() and saving_now.exists()


def test_runs_claiming_at_the_same_moment_get_distinct_versions(tmp_path):
    loggers = [TensorBoardLogger(tmp_path, name="exp") for _ in range(8)]  # none has looked yet
    start = threading.Barrier(len(loggers))

    def claim(logger):
        start.wait()
        return claim_run_dir(logger)

    with ThreadPoolExecutor(len(loggers)) as pool:
        claimed = list(pool.map(claim, loggers))
    assert sorted(path.name for path, _ in claimed) == [f"version_{n}" for n in range(8)]
    assert all(created and path.is_dir() for path, created in claimed)
    assert sorted(Path(logger.log_dir) for logger in loggers) == sorted(path for path, _ in claimed)


@pytest.mark.slow
def test_two_runs_started_together_get_their_own_directories(tmp_path):
    runs = [
        subprocess.Popen(
            script_command("train.py", "--trainer.max_epochs=1", *QUIET),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr[-2000:]
    run_dirs = sorted((tmp_path / "logs" / "d2l").iterdir())
    assert [path.name for path in run_dirs] == ["version_0", "version_1"]
    writers = []
    for run_dir in run_dirs:
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["run_dir"] == str(run_dir.resolve())
        assert [p.name for p in (run_dir / "checkpoints").glob("*.ckpt")].count("last.ckpt") == 1
        # events.out.tfevents.<time>.<host>.<pid>.<n>[.scalars|.figures]: every event file of a directory
        # from one run: its process (TensorBoard's writer and the logger's scalars), and the one
        # beside it that drew the figures.
        names = [path.name.removesuffix(".scalars") for path in run_dir.glob("events.out.tfevents.*")]
        own = {name.split(".")[-2] for name in names if not name.endswith(".figures")}
        drawn = {name.split(".")[-3] for name in names if name.endswith(".figures")}
        assert len(own) == 1 and len(drawn) == 1 and own != drawn
        writers.append(own | drawn)
    assert not writers[0] & writers[1]


@pytest.mark.slow
def test_a_named_version_is_refused_unless_resumed(train_run, in_tmp):
    mine = ["--trainer.logger.init_args.version=mine", "--trainer.max_epochs=1"]
    first = train_run(*mine)
    before = files_and_bytes(in_tmp / "logs")
    with pytest.raises(InputError, match=r"version='mine': '.*mine' holds an earlier run; choose another version"):
        train_run(*mine)
    assert files_and_bytes(in_tmp / "logs") == before
    resumed = train_run(
        "--trainer.logger.init_args.version=mine",
        "--trainer.max_epochs=2",
        f"--ckpt_path={first['checkpoints']['last']}",
    )
    assert resumed["epochs"] == 2 and resumed["run_dir"] == first["run_dir"]


class BreaksBeforeTheFirstStep(Callback):
    """A training error after the run directory is made and before any step."""

    def on_train_start(self, trainer, pl_module):
        raise RuntimeError("broken before the first step")


BREAK = "--trainer.callbacks+=tests.e2e.test_faults.BreaksBeforeTheFirstStep"


def test_a_failed_start_leaves_no_run_directory(train_run, in_tmp):
    with pytest.raises(RuntimeError, match="broken before the first step"):
        train_run(BREAK)
    assert list((in_tmp / "logs" / "d2l").iterdir()) == []


@pytest.mark.slow
def test_a_failed_resume_keeps_the_directory_it_resumed(train_run, in_tmp):
    first = train_run("--trainer.logger.init_args.version=kept", "--trainer.max_epochs=1")
    before = files_and_bytes(Path(first["run_dir"]))
    with pytest.raises(RuntimeError, match="broken before the first step"):
        train_run("--trainer.logger.init_args.version=kept", f"--ckpt_path={first['checkpoints']['last']}", BREAK)
    assert set(before) <= set(files_and_bytes(Path(first["run_dir"])))


class CtrlCAtStep5(Callback):
    """Ctrl-C to this very process at the end of the Lightning batch that reaches step 5."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= 5 and not getattr(self, "sent", False):
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


# One optimizer step per Lightning batch, or d2l's whole epoch (80 steps) in one under "auto": a
# stop comes between Lightning batches, where the checkpoint and the loops agree.
@pytest.mark.parametrize("steps_per_batch, stopped_at", [("1", 5), ("auto", 80)])
def test_ctrl_c_alone_stops_at_the_next_batch_saves_and_restores_the_handler(
    train_run, in_tmp, steps_per_batch, stopped_at
):
    with pytest.raises(Interrupted) as stopped:
        train_run(
            f"--data.steps_per_batch={steps_per_batch}", "--trainer.callbacks+=tests.e2e.test_faults.CtrlCAtStep5"
        )
    assert stopped.value.code == 130
    checkpoint = torch.load(in_tmp / "logs/d2l/version_0/checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == stopped_at
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C works again afterwards
    # No watchdog left armed: it would end this (test) process 20 s later.
    assert not [t for t in threading.enumerate() if isinstance(t, threading.Timer) and t.is_alive()]


class SignalAtSetup(Callback):
    """Sends SIGINT to this process while the Trainer sets up: before any stage, and before
    GracefulStop, Lightning's KeyboardInterrupt path set SIGINT to 'ignore' and kept it so."""

    def setup(self, trainer, pl_module, stage):
        os.kill(os.getpid(), signal.SIGINT)


def test_a_run_in_process_gives_back_the_signal_handlers_it_found(in_tmp, monkeypatch, capsys):
    from linreg_pl.cli import run_command, train

    monkeypatch.setattr("sys.argv", ["train.py"])
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(SystemExit) as ended:
        run_command(train, ["--trainer.callbacks+=tests.e2e.test_faults.SignalAtSetup", *QUIET])
    assert ended.value.code == 128 + signal.SIGINT
    assert capsys.readouterr().err.count("error:") == 1
    assert {signum: signal.getsignal(signum) for signum in before} == before
    assert not list(in_tmp.glob("logs/*/version_*"))  # the run that never started left no directory
    assert not [t for t in threading.enumerate() if t.name == "linreg_pl-signal-watcher"]
    # No watchdog left armed either: it would end this (test) process seconds later.
    assert not [t for t in threading.enumerate() if isinstance(t, threading.Timer) and t.is_alive()]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
@pytest.mark.parametrize("moment", [0.5, 1, 2, 5, "training"])
def test_a_signal_to_the_launcher_at_any_moment_ends_every_process(ddp_run, signum, moment):
    """Start-up (imports, the parser, the launch of rank 1, the process group) and training: every
    process gone within the deadline, 128 + signum, at most one error line, no empty run directory."""
    process, last, log = ddp_run
    if moment == "training":
        wait_for_epochs(last, process, epochs=1)
    else:
        time.sleep(moment)  # chooses the moment of the signal; every assertion below waits for events
    process.send_signal(signum)
    wait_until_all_ended(process, STOP_DEADLINE_S)
    output = log.read_text()
    assert process.returncode == 128 + signum, output[-3000:]
    assert "Traceback" not in output and len([line for line in output.splitlines() if "error" in line]) <= 1, output
    run_dirs = list((log.parent / "logs").glob("*/version_*"))
    assert all(any(run.rglob("*.ckpt")) for run in run_dirs), [list(run.iterdir()) for run in run_dirs]


@pytest.mark.slow
def test_a_resume_warns_of_nothing(train_run, in_tmp):
    from linreg_pl.cli import ignore_third_party_warnings

    train_run("--trainer.max_epochs=1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning, each time: as a fresh program shows them
        ignore_third_party_warnings()
        train_run("--trainer.max_epochs=2", "--ckpt_path=last")
    assert [str(w.message) for w in caught] == []  # resuming into a new version directory is the design
