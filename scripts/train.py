"""Train a linear regression: ``python scripts/train.py [--config FILE] [--trainer.* ...]``.

configs/default.yaml (the d2l set) is applied first; ``--help`` lists every option.
"""

import _start  # noqa: F401, I001  (first: a signal while importing ends in one line too)


from linreg_pl.commands import train

if __name__ == "__main__":
    train()
