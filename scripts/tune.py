"""Tune hyper-parameters with Optuna: ``python scripts/tune.py --tune configs/tune/ridge.yaml --config
configs/diabetes.yaml [--n_trials N] [--study_name S] [--storage URL] [train flags]``.

Rerunning the same command resumes the study. Needs the ``[tune]`` extra (``pip install 'linreg_pl[tune]'``).
"""

from linreg_pl.commands import tune

if __name__ == "__main__":
    tune()
