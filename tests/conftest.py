"""Shared fixtures: every test that trains runs in its own temporary working directory.

linreg_pl is imported inside the fixtures, not here: under pytest-xdist the controlling process
loads this file too, and importing Lightning there (~8 s) would delay starting the workers."""

import sys

import pytest

from tests.helpers import CONFIGS, QUIET, train_in

# Under pytest-xdist (-n, whose default --dist is load), the tests of a file that share a trained
# run (a module- or session-scoped fixture) go to one worker as one unit, so the run is trained once
# and not on each worker; every other test is scheduled on its own. (xdist_group marks with --dist
# loadgroup would say this in the test files, but do not group under pytest 9.2 with xdist 3.8:
# pytest-dev/pytest-xdist#1386.) test_distributed is not grouped: its one-process reference trains
# in-process in ~3 s, and its DDP tests (minutes) are better spread over both workers.
SHARED_RUNS = {
    "tests/unit/test_grunfeld.py": "grunfeld: runs",
    "tests/unit/test_serve.py": "csv_run",
    "tests/unit/test_export.py": "csv_run",
    "tests/unit/callbacks/test_monitors.py": "test_monitors: d2l_run",
    "tests/e2e/test_networks.py": "test_networks: two_layer_run",
}


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "load":  # another --dist asked for: xdist's own
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedRunScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return SHARED_RUNS.get(nodeid.split("::", 1)[0], nodeid)

    return SharedRunScheduling(config, log)


def ignore_third_party_warnings() -> None:
    from linreg_pl.cli import ignore_third_party_warnings

    ignore_third_party_warnings()


@pytest.fixture(autouse=True)
def third_party_warnings_ignored():
    """The entry points' own warning filters (pytest resets the filters for every test)."""
    ignore_third_party_warnings()


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in a fresh directory so that logs/ and summary.json land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def train_run(in_tmp, monkeypatch):
    """Call the training entry in-process: ``train_run("--config", path, ...)`` -> summary."""
    from linreg_pl.cli import train

    monkeypatch.setattr(sys, "argv", ["train.py"])  # pytest's own flags are not ours

    def run(*args: str) -> dict:
        return train([*args, *QUIET])

    return run


@pytest.fixture(scope="session")
def csv_run(tmp_path_factory):
    """One run of configs/csv.yaml (30 epochs), trained once for the tests that read its checkpoint
    and run directory (tests/unit/test_serve.py, test_export.py: one xdist unit, SHARED_RUNS).
    Tests must not change what it wrote; evaluate may add evaluation.json to it."""
    ignore_third_party_warnings()  # session-scoped: before the per-test fixture that applies them
    return train_in(tmp_path_factory.mktemp("csv"), "--config", str(CONFIGS / "csv.yaml"), "--trainer.max_epochs=30")
