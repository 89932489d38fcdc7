"""Shared fixtures: every test that trains runs in its own temporary working directory."""

import sys

import pytest

from linreg_pl.cli import ignore_third_party_warnings
from tests.helpers import QUIET


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
