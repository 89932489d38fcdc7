"""Predict with a checkpoint: ``python scripts/predict.py --ckpt_path CKPT --input X.csv --output PRED.csv``."""

import _start  # noqa: F401, I001  (first: a signal while importing ends in one line too)


from linreg_pl.commands import predict

if __name__ == "__main__":
    predict()
