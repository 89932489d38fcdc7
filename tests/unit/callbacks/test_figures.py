"""FitFigures draws beside training (a forked process on Linux): the same figures as drawing in the
training process, and still every figure when that process fails."""

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
    files = {name: (run_dir / name).read_bytes() for name in ("fit.gif", "landscape.png", "fit.png")}
    return {"images": shown_images(run_dir), "files": files}


def shown_images(run_dir: Path) -> dict:
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    return {tag: [(e.step, e.encoded_image_string) for e in events.Images(tag)] for tag in events.Tags()["images"]}


def children() -> set[int]:
    """This process's children, ended (zombies: not reaped) or not."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):  # not a process, or it ended while being read
            continue
        if parent == os.getpid():
            found.add(int(entry.name))
    return found


def run_figures(train_run, name: str, lesson: list[str] = LINE) -> dict:
    before = children()
    summary = train_run(*lesson, f"--trainer.logger.name={name}")
    assert children() <= before  # the drawing process ended with the fit, and was reaped
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


@pytest.mark.slow
def test_figures_drawn_beside_training_are_those_drawn_in_it(train_run, monkeypatch, drawn_here):
    beside = run_figures(train_run, "beside")
    assert drawn_here == []
    monkeypatch.setattr(figures, "offload", lambda make: InProcess(make()))  # as off Linux
    here = run_figures(train_run, "here")
    assert drawn_here == ["add"] * 21 + ["finish"]
    assert len(beside["images"]["fit"]) == 21 and len(beside["images"]["landscape"]) == 1
    assert beside == here


@pytest.mark.parametrize("lesson, step", [(LINE, 5), (FOUR_POINTS, 1)], ids=["line", "four_points"])
@pytest.mark.slow
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


@pytest.mark.slow
def test_the_landscape_depends_on_the_whole_path_alone():
    # Beside training the landscape widens as the path comes in pieces; drawn after a failure it
    # sees the whole path at once. A path that overshoots in b grows the window piece by piece.
    import numpy as np

    from linreg_pl.callbacks.plots import Landscape

    x = np.linspace(0, 1, 50)[:, None]
    t = np.linspace(0, 1, 200)[:, None]
    path = np.hstack([3 * t, 0.8 * t + 2 * np.sin(np.pi * t)])
    data = (x, 3 * x + 0.8, path[0], (np.array([[3.0]]), np.array([0.8])))
    in_pieces, at_once = Landscape(*data), Landscape(*data)
    windows = set()
    for piece in np.array_split(path, 9):
        in_pieces.hold(piece)
        windows.add(in_pieces.window)
    assert len(windows) > 2  # it did widen piece by piece
    assert in_pieces.image(path).tobytes() == at_once.image(path).tobytes()
    in_pieces.close()
    at_once.close()


def test_fit_returns_while_the_figures_are_written_and_settle_waits_for_them(in_tmp, monkeypatch):
    from linreg_pl.cli import TrainCLI

    monkeypatch.setattr(sys, "argv", ["train.py"])
    cli = TrainCLI([*LINE, "--trainer.enable_progress_bar=false"])
    callback = next(c for c in cli.trainer.callbacks if isinstance(c, figures.FitFigures))
    before = children()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    run_dir = Path(cli.trainer.logger.log_dir)
    assert len(children() - before) == 1  # the drawing process, not waited for
    callback.settle()  # what the end of the next stage, or of the interpreter, does
    assert children() <= before
    assert {"fit.gif", "landscape.png"} <= {p.name for p in run_dir.iterdir()}
    assert len(shown_images(run_dir)["fit"]) == 21
