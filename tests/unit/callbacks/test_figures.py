"""FitFigures draws beside training (a forked process on Linux): the same figures as drawing in the
training process, and still every figure when that process fails."""

import multiprocessing
import os
import signal
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from linreg_pl.callbacks import figures
from linreg_pl.callbacks.figures import SnapshotDrawing
from linreg_pl.runtime.offload import InProcess
from tests.helpers import CONFIGS

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the drawing is forked on Linux only")
# 40 epochs of the line lesson: 21 snapshots, and a path that leaves the landscape's first window;
# four_points: a path whose window grows piece by piece while training runs.
LINE = ["--config", str(CONFIGS / "line.yaml"), "--trainer.max_epochs=40"]
FOUR_POINTS = ["--config", str(CONFIGS / "four_points.yaml"), "--trainer.max_epochs=300"]


def shown(run_dir: Path) -> dict:
    """The files and the TensorBoard images (tag -> [(step, PNG)]) a user sees."""
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    images = {tag: [(e.step, e.encoded_image_string) for e in events.Images(tag)] for tag in events.Tags()["images"]}
    files = {name: (run_dir / name).read_bytes() for name in ("fit.gif", "landscape.png", "fit.png")}
    return {"images": images, "files": files}


def run_figures(train_run, name: str, lesson: list[str] = LINE) -> dict:
    summary = train_run(*lesson, f"--trainer.logger.name={name}")
    assert multiprocessing.active_children() == []  # the drawing process ended with the fit
    return shown(Path(summary["run_dir"]))


@pytest.fixture
def drawn_here(monkeypatch) -> list[str]:
    """The SnapshotDrawing calls made in this process (a forked child's calls change its own copy)."""
    calls = []
    for method in ("add", "finish"):
        original = getattr(SnapshotDrawing, method)

        def record(self, *args, method=method, original=original):
            calls.append(method)
            return original(self, *args)

        monkeypatch.setattr(SnapshotDrawing, method, record)
    return calls


def test_figures_drawn_beside_training_are_those_drawn_in_it(train_run, monkeypatch, drawn_here):
    beside = run_figures(train_run, "beside")
    assert drawn_here == []
    monkeypatch.setattr(figures, "offload", lambda make: InProcess(make()))  # as off Linux
    here = run_figures(train_run, "here")
    assert drawn_here == ["add"] * 21 + ["finish"]
    assert len(beside["images"]["fit"]) == 21 and len(beside["images"]["landscape"]) == 1
    assert beside == here


@pytest.mark.parametrize("lesson, step", [(LINE, 5), (FOUR_POINTS, 1)], ids=["line", "four_points"])
def test_a_drawing_process_that_dies_leaves_the_figures_to_the_trainer(
    train_run, monkeypatch, drawn_here, lesson, step
):
    expected = run_figures(train_run, "expected", lesson)
    parent, add = os.getpid(), SnapshotDrawing.add
    drawn_here.clear()

    def dies_at_the_step(self, at, *args):
        if at == step and os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        add(self, at, *args)

    monkeypatch.setattr(SnapshotDrawing, "add", dies_at_the_step)
    assert run_figures(train_run, "died", lesson) == expected
    assert drawn_here == ["add"] * 21 + ["finish"]  # all of it again, here
