"""Predict with a checkpoint: ``python scripts/predict.py --ckpt_path CKPT --input X.csv --output PRED.csv``."""

from linreg_pl.cli import run_command
from linreg_pl.serve import predict

if __name__ == "__main__":
    run_command(predict)
