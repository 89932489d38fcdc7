"""Right by default: for each config in configs/ and a few generated CSVs run with no option but the
file and the target, the epochs run, the wall time and the final train loss over the exact optimum.

    python -m benchmarks.defaults [--repo DIR] [--out FILE]

``--repo`` runs another checkout's scripts/train.py (e.g. an older commit, for a before/after table).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ["d2l", "line", "four_points", "make_regression", "csv", "diabetes", "linnerud"]
# (rows, features, log10 of the smallest and largest feature scale, collinear pair, seed)
CSV_CASES = [
    (15, 3, (-3, 6), False, 1),
    (200, 5, (-3, 6), False, 0),
    (1000, 20, (0, 0), True, 0),
    (100_000, 50, (-2, 3), False, 0),
]


def write_csv(path: Path, rows: int, features: int, scales, collinear: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scale = np.logspace(*scales, features)
    x = rng.normal(size=(rows, features)) * scale + rng.normal(size=features) * scale
    if collinear:
        x[:, 1] = x[:, 0] + 1e-3 * rng.normal(size=rows)
    y = x @ (rng.normal(size=features) / scale) + 3.0 + 0.5 * rng.normal(size=rows)
    pd.DataFrame(np.column_stack([x, y]), columns=[f"f{i}" for i in range(features)] + ["y"]).to_csv(path, index=False)


def run(repo: Path, cwd: Path, args: list[str]) -> dict:
    result = subprocess.run(
        [sys.executable, str(repo / "scripts" / "train.py"), *args, "--trainer.enable_progress_bar=false"],
        cwd=cwd, capture_output=True, text=True, timeout=1800, env={**os.environ, "PYTHONPATH": str(repo)},
    )  # fmt: skip
    run_dirs = [Path(line) for line in result.stdout.splitlines() if (Path(line) / "summary.json").is_file()]
    if result.returncode or not run_dirs:
        return {"error": (result.stderr.strip().splitlines() or ["?"])[-1]}
    summary = json.loads((run_dirs[-1] / "summary.json").read_text())
    exact = summary["exact"] or {}
    ratio = exact["train_loss"] / exact["optimal_train_loss"] if exact.get("optimal_train_loss") else None
    return {"epochs": summary["epochs"], "wall_s": summary["wall_time_s"], "mse_over_optimum": ratio}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=ROOT)
    parser.add_argument("--out", type=Path, default=Path("benchmark_results/defaults.json"))
    config = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in LESSONS:
            rows.append(
                {
                    "case": f"configs/{name}.yaml",
                    **run(config.repo, tmp, ["--config", str(ROOT / "configs" / f"{name}.yaml")]),
                }
            )
        for case in CSV_CASES:
            rows_, features, scales, collinear, seed = case
            path = tmp / f"csv_{rows_}x{features}.csv"
            write_csv(path, *case)
            args = ["--data.source=CSVSource", f"--data.source.path={path}", "--data.source.target=y"]
            label = f"CSV {rows_}x{features}, scales 1e{scales[0]}..1e{scales[1]}" + (
                ", collinear pair" if collinear else ""
            )
            rows.append({"case": label, **run(config.repo, tmp, args)})
    config.out.parent.mkdir(parents=True, exist_ok=True)
    config.out.write_text(json.dumps(rows, indent=2) + "\n")
    print("| case | epochs | wall s | train MSE / optimum |\n| --- | ---: | ---: | ---: |")
    for row in rows:
        ratio = f"{row['mse_over_optimum']:.6f}" if row.get("mse_over_optimum") else "–"
        cells = [row["case"], str(row.get("epochs", row.get("error", ""))), f"{row.get('wall_s', 0):.1f}", ratio]
        print("| " + " | ".join(cells) + " |")
    return rows


if __name__ == "__main__":
    main()
