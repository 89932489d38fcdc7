"""Predict with a checkpoint: ``python scripts/predict.py --ckpt_path CKPT --input X.csv --output PRED.csv``."""

from linreg_pl.commands import predict

if __name__ == "__main__":
    predict()
