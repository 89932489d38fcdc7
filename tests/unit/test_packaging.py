"""Packaging: the console scripts that setup.cfg declares exist, and scripts/*.py call the same
functions; the optional extras stay out of what training installs."""

import ast
import configparser
import subprocess
import sys

import pytest

from tests.helpers import ROOT

COMMANDS = ("train", "evaluate", "predict", "tune", "export")


def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def console_scripts() -> dict[str, str]:
    lines = setup_cfg()["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines)


def test_every_command_is_a_console_script_whose_target_imports():
    scripts = console_scripts()
    assert sorted(scripts) == sorted(f"linreg-{name}" for name in COMMANDS)
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        assert callable(getattr(__import__(module, fromlist=[function]), function)), name


@pytest.mark.parametrize("name", COMMANDS)
def test_each_script_calls_its_console_script_function(name):
    target = console_scripts()[f"linreg-{name}"]
    module, _, function = target.partition(":")
    tree = ast.parse((ROOT / "scripts" / f"{name}.py").read_text())
    imported = {
        (node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert (module, function) in imported and function in called


def test_the_extras_are_optional_and_dev_holds_what_the_tests_need():
    extras = setup_cfg()["options.extras_require"]
    required = setup_cfg()["options"]["install_requires"].lower()
    for package in ("optuna", "onnx", "pytest", "ruff"):
        assert package not in required, package
    assert "optuna-integration" in extras["tune"] and "onnxruntime" in extras["export"]
    dev = extras["dev"]
    for package in ("linreg_pl[tune,export]", "pytest-xdist", "statsmodels", "hypothesis", "ruff", "pre-commit"):
        assert package in dev, package


# Each script as a program: _start.py turns collection off (done here again before each, as _start is
# imported once), the script runs to its --help, and says whether collection is back on.
PROBE = """
import gc, runpy, sys
sys.path.insert(0, "scripts")
for name in sys.argv[1:]:
    gc.disable()
    sys.argv = [name, "--help"]
    try:
        runpy.run_path(f"scripts/{name}", run_name="__main__")
    except SystemExit:
        pass
    print(name, "collecting" if gc.isenabled() else "NOT collecting", gc.get_freeze_count() > 100_000)
from tensorboard.summary.writer import record_writer
print("event checksums from", record_writer.masked_crc32c.__module__)
"""


@pytest.mark.slow
def test_each_script_collects_garbage_again_once_started():
    # scripts/_start.py turns collection off while the imports run; linreg_pl.commands.started()
    # must freeze what they made and turn it back on, or a long run would never free a cycle. It
    # also has TensorBoard's event files checksummed in C.
    names = [f"{name}.py" for name in (*COMMANDS, "make_dataset")]
    ran = subprocess.run([sys.executable, "-c", PROBE, *names], cwd=ROOT, capture_output=True, text=True)
    said = [line for line in ran.stdout.splitlines() if line.split(" ")[0] in names]
    assert said == [f"{name} collecting True" for name in names], ran.stdout[-500:] + ran.stderr[-500:]
    assert "event checksums from linreg_pl.logger" in ran.stdout


SPAWNED = """
import gc, multiprocessing, sys
sys.path.insert(0, "scripts")
import _start  # as a script does, first


def report(queue):
    queue.put(gc.isenabled())


if __name__ == "__main__":
    gc.enable()  # the program started (linreg_pl.commands.started)
    context = multiprocessing.get_context("spawn")  # a DataLoader worker's, a ddp_spawn rank's
    queue = context.Queue()
    child = context.Process(target=report, args=(queue,))
    child.start()
    print("child collecting", queue.get(timeout=60))
    child.join()
"""


def test_a_spawned_child_of_a_script_collects_garbage(tmp_path):
    # A spawned process imports the script (hence _start.py) again but never runs its start.
    probe = tmp_path / "probe.py"
    probe.write_text(SPAWNED)
    ran = subprocess.run([sys.executable, str(probe)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "child collecting True" in ran.stdout, ran.stdout[-500:] + ran.stderr[-500:]
