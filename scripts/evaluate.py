"""Score a checkpoint: ``python scripts/evaluate.py --ckpt_path CKPT [--data.* ...]``.

By default it uses the data the checkpoint was trained on and scores its test split.
"""

import _start  # noqa: F401, I001  (first: a signal while importing ends in one line too)


from linreg_pl.commands import evaluate

if __name__ == "__main__":
    evaluate()
