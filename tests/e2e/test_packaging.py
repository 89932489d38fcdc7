"""`pip install .` as a user runs it: a wheel of the package gives the console scripts."""

import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # builds and installs a wheel


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
    for name in ("train", "evaluate", "predict", "tune", "export"):
        result = subprocess.run(
            [sys.executable, site / "bin" / f"linreg-{name}", "--help"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.startswith(f"usage: linreg-{name}"), result.stdout[:200]
    where = subprocess.run(
        [sys.executable, "-c", "import linreg_pl; print(linreg_pl.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(site))
