"""The benchmark is not part of the suite; this keeps it working, on tiny sizes."""

import json
import subprocess

from tests.helpers import script_command


def test_benchmark_runs_on_tiny_sizes_and_writes_its_tables(tmp_path):
    result = subprocess.run(
        script_command(
            "benchmark.py",
            "--cases",
            "small",
            "large",
            "--n_samples",
            "2000",
            "--epochs",
            "2",
            "--repeats",
            "1",
            "--out",
            str(tmp_path),
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "results.json").read_text())
    by_case = {}
    for row in rows:
        by_case.setdefault(row["case"], {})[row["row"].split()[0]] = row
    for rows_of_case in by_case.values():
        assert set(rows_of_case) == {"1", "2", "3", "3b", "4a", "4b", "5", "6"}
        assert rows_of_case["2"]["ratio_vs_row2"] == 1.0
        assert rows_of_case["5"]["mse_vs_optimum"] == 1.0 or abs(rows_of_case["5"]["mse_vs_optimum"] - 1) < 1e-9
        assert rows_of_case["5"]["coef_max_rel_diff_vs_sklearn"] < 1e-6
    assert "| 3 linreg_pl under Lightning |" in (tmp_path / "results.md").read_text()
