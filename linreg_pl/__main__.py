"""``python -m linreg_pl [flags]``: ``scripts/train.py`` as a module, which Lightning's DDP launcher can
re-run in each rank wherever the package is installed (how ``linreg_pl.tune`` runs such trials)."""

from linreg_pl.commands import train

if __name__ == "__main__":
    train()
