"""`pip install .` as a user runs it: a wheel of the package gives the console scripts."""

import json
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # builds and installs a wheel

COMMANDS = ("train", "evaluate", "predict", "tune", "export")
# Runs BIN/linreg-NAME --help for each NAME as the script it is; prints [[exit status, stdout], ...].
RUN_EACH_HELP = """
import contextlib, io, json, os, runpy, sys
bin_dir, results = sys.argv[1], []
for name in sys.argv[2:]:
    script = os.path.join(bin_dir, f"linreg-{name}")
    sys.argv, out, code = [script, "--help"], io.StringIO(), None
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as exit:
            code = exit.code
    results.append([code, out.getvalue()])
print(json.dumps(results))
"""


def test_an_installed_wheel_gives_the_console_scripts(tmp_path):
    source = tmp_path / "source"  # a copy, so that building leaves nothing in the checkout
    shutil.copytree(ROOT / "linreg_pl", source / "linreg_pl", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "wheel", source], check=True)
    (wheel,) = (tmp_path / "wheel").glob("linreg_pl-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert 'Requires-Dist: optuna>=4.0; extra == "tune"' in metadata
    assert 'Requires-Dist: pytest>=7.4; extra == "dev"' in metadata
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True)
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}  # the installed copy, not the checkout
    # Each console script's --help, run as its file from the installed copy: in one interpreter,
    # which imports Lightning once (~9 s here) rather than five times.
    helps = subprocess.run(
        [sys.executable, "-c", RUN_EACH_HELP, site / "bin", *COMMANDS],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert helps.returncode == 0, helps.stderr[-2000:]
    for name, (code, stdout) in zip(COMMANDS, json.loads(helps.stdout.splitlines()[-1]), strict=True):
        assert code == 0, (name, stdout[-2000:])
        assert stdout.startswith(f"usage: linreg-{name}"), stdout[:200]
    where = subprocess.run(
        [sys.executable, "-c", "import linreg_pl; print(linreg_pl.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(site))
