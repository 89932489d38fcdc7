"""Every way a command can fail on its input ends in one line naming the option, the value given,
what is expected and where it was set (the command line or a config file), with exit status 2;
faults of the machine (a full disk, Ctrl-C at start-up) in one line with their own status."""

import errno
import signal
import sys
import threading

import pytest

from linreg_pl.cli import run_command, train


def one_error_line(capsys, command, args: list[str], status: int = 2) -> str:
    """Run ``command`` as its script would; return its only stderr line, after checking the status."""
    with pytest.raises(SystemExit) as ended:
        run_command(command, args)
    assert ended.value.code == status
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.fixture
def csv_file(in_tmp, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py"])
    path = in_tmp / "data.csv"
    path.write_text("x;y\n" + "".join(f"{i},5;{2 * i + i % 3},25\n" for i in range(20)))  # decimal commas
    return path


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--data.val_fraction", "abc"], "--data.val_fraction abc: expected a float"),
        (["--data.seed", "1.5"], "--data.seed 1.5: expected an int"),
        (["--trainer.max_epochs", "x"], "--trainer.max_epochs x: expected an int or null"),
        (["--model.optimizer.lr", "abc"], "--model.optimizer.lr abc: expected a float"),
        (["--data.source", "CSVSource"], "--data.source CSVSource needs --data.source.path and --data.source.target"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_key_the_value_and_the_type(capsys, in_tmp, monkeypatch, flags, expected):
    monkeypatch.setattr(sys, "argv", ["train.py"])
    assert expected in one_error_line(capsys, train, flags)


def test_a_wrong_value_in_a_config_file_names_the_file(capsys, in_tmp, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py"])
    (in_tmp / "mine.yaml").write_text("data:\n  val_fraction: abc\n")
    line = one_error_line(capsys, train, ["--config", "mine.yaml"])
    assert "--data.val_fraction abc: expected a float (set in mine.yaml)" in line


@pytest.mark.parametrize(
    "content, expected",
    [
        ("a: [1\n", "'bad.yaml' is not valid YAML at line 2, column 1"),
        ("- a\n", "'bad.yaml' is a YAML list, not a mapping"),
        ("hello\n", "'bad.yaml' is a YAML str, not a mapping"),
        ("", "'bad.yaml' is empty"),
    ],
    ids=["syntax", "list", "scalar", "empty"],
)
def test_a_config_that_is_not_a_mapping_is_named(capsys, in_tmp, monkeypatch, content, expected):
    monkeypatch.setattr(sys, "argv", ["train.py"])
    (in_tmp / "bad.yaml").write_text(content)
    assert expected in one_error_line(capsys, train, ["--config", "bad.yaml"])


def test_symlink_loops_as_config_or_data_path(capsys, in_tmp, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py"])
    (in_tmp / "a").symlink_to("b")
    (in_tmp / "b").symlink_to("a")
    assert "--config 'a' cannot be read" in one_error_line(capsys, train, ["--config", "a"])
    line = one_error_line(capsys, train, ["--data.source=CSVSource", "--data.source.path=a", "--data.source.target=y"])
    assert "data.source.path='a' is a loop of symbolic links" in line


def test_decimal_comma_flag_reads_the_file(csv_file, capsys):
    """``--data.source.decimal ','``: a bare ',' is not YAML, and must reach the source as text."""
    summary = train(
        ["--data.source=CSVSource", f"--data.source.path={csv_file}", "--data.source.target=y",
         "--data.source.decimal", ",", "--trainer.max_epochs=1", "--trainer.logger=false"]
    )  # fmt: skip
    assert summary == {} or summary["dataset"]  # it parsed and trained
    assert "Traceback" not in capsys.readouterr().err


def test_a_constant_target_is_refused_with_its_value(in_tmp, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py"])
    (in_tmp / "flat.csv").write_text("x,y\n" + "".join(f"{i},5\n" for i in range(10)))
    line = one_error_line(
        capsys, train, ["--data.source=CSVSource", "--data.source.path=flat.csv", "--data.source.target=y"]
    )
    assert "the target is the same on every training row ('y' is 5)" in line


def test_a_gpu_asked_for_on_a_machine_without_one_names_the_fix(capsys, in_tmp, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py"])
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("torch.backends.mps.is_available", lambda: False)
    line = one_error_line(capsys, train, ["--trainer.accelerator=gpu", "--trainer.logger=false"])
    assert "use --trainer.accelerator cpu" in line


def test_a_full_disk_is_one_line_with_the_path_and_the_free_space_and_exit_1(capsys, in_tmp):
    def fills_the_disk(args):
        # What TensorBoard's writer thread does first (prints a traceback), then the main thread.
        failing = threading.Thread(target=lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
        failing.start()
        failing.join()
        raise OSError(errno.EFBIG, "File too large", str(in_tmp / "logs" / ".summary.json.123.partial"))

    hook = threading.excepthook
    line = one_error_line(capsys, fills_the_disk, [], status=1)
    assert f"cannot write '{in_tmp / 'logs' / 'summary.json'}' (File too large;" in line and "MB free" in line
    assert threading.excepthook is hook  # the quiet hook lasted the command only


def test_ctrl_c_at_start_up_is_one_line_and_exit_130(capsys):
    def start_up(args):
        raise KeyboardInterrupt

    assert "interrupted (SIGINT)" in one_error_line(capsys, start_up, [], status=128 + signal.SIGINT)
