"""Hyper-parameter search with Optuna: ``python scripts/tune.py --tune SPACE.yaml [train flags]``.

Every trial is an ordinary ``scripts/train.py`` run with the sampled values given as flags
(``--model.l2=0.01``), so any ``--model.*``, ``--data.*`` or ``--trainer.*`` option can be tuned, and
each trial leaves a run directory ``<experiment>/<study>/trial_N`` (TensorBoard's HPARAMS tab shows
them side by side). The search space, the validation metric to optimize and the pruner come from
a YAML file (``configs/tune/*.yaml``)::

    metric: val/mse          # a validation metric the model logs: val/loss, val/mse, val/rmse, val/mae, val/r2
    direction: minimize      # optional: maximize for val/r2, minimize otherwise
    pruner: MedianPruner     # optional: a class of optuna.pruners, or {class: NAME, ...its arguments}
    sampler: {class: TPESampler, seed: 0}   # optional
    params:
      model.l2: {low: 1.0e-6, high: 1.0, log: true}       # float (int when both bounds are ints)
      model.optimizer: {choices: [torch.optim.SGD, torch.optim.Adam]}   # categorical

The study lives in SQLite in the experiment folder (``<save_dir>/<name>/optuna.db``) unless
``--storage`` says otherwise. Rerunning the same command resumes it: a trial whose process died
(SIGKILL, power cut) is marked failed and retried with the same parameters, and the search goes
on until ``--n_trials`` trials have finished (complete, or pruned: a pruned trial is an answer).
Trials that need several processes (DDP, several devices or nodes) run as a ``python -m
linreg_pl`` subprocess, since Lightning's launcher re-executes the command line in every rank and
would restart a study loop there (Lightning #11300, #11617). At the end the best trial's resolved
config is written as ``best.yaml`` (``scripts/train.py --config best.yaml`` reproduces it), with
Optuna's optimization history and parameter importances as images.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import warnings
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

import jsonargparse
import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from linreg_pl.cli import TrainCLI, train
from linreg_pl.errors import InputError
from linreg_pl.runtime.checkpoints import process_is_alive
from linreg_pl.runtime.files import write_text_atomically

INSTALL_HINT = "pip install 'linreg_pl[tune]'"
VALIDATION_METRICS = ("val/loss", "val/mse", "val/rmse", "val/mae", "val/r2")
MULTI_PROCESS_STRATEGIES = ("ddp", "fsdp", "deepspeed")
TRIAL_PRUNING = "linreg_pl.tune.TrialPruning"
# Ctrl-C, and SIGTERM: Lightning's SIGTERMException and GracefulStop's Interrupted are SystemExits.
INTERRUPTS = (KeyboardInterrupt, SystemExit)


def require_optuna():
    """The ``optuna`` module, or the one-line error that names the extra to install."""
    try:
        import optuna
        from optuna_integration.pytorch_lightning import PyTorchLightningPruningCallback  # noqa: F401
    except ImportError as error:
        raise InputError(f"tuning needs Optuna ({error.name} is not installed): {INSTALL_HINT}") from None
    return optuna


@dataclass
class SearchSpace:
    """A ``configs/tune/*.yaml`` file: what to sample, what to optimize, how to prune."""

    params: dict[str, dict]
    metric: str = "val/loss"
    direction: str | None = None
    pruner: str | dict | None = None
    sampler: str | dict | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> SearchSpace:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"--tune '{path}' is not a file; give a search space such as configs/tune/ridge.yaml.")
        spec = yaml.safe_load(path.read_text()) or {}
        if not isinstance(spec, dict) or not isinstance(spec.get("params"), dict) or not spec["params"]:
            raise InputError(f"--tune '{path}' has no 'params' mapping; list the options to tune under 'params:'.")
        unknown = set(spec) - {"params", "metric", "direction", "pruner", "sampler"}
        if unknown:
            raise InputError(
                f"--tune '{path}' has unknown key(s) {sorted(unknown)}; allowed: params, metric, direction, pruner, "
                "sampler."
            )
        space = cls(**spec)
        space.check(path)
        return space

    def check(self, path: Path) -> None:
        if self.metric not in VALIDATION_METRICS:
            raise InputError(
                f"{path}: metric={self.metric!r} is not a validation metric; use one of {VALIDATION_METRICS}."
            )
        if self.direction not in (None, "minimize", "maximize"):
            raise InputError(f"{path}: direction={self.direction!r} must be 'minimize' or 'maximize'.")
        for key, spec in self.params.items():
            if not key.startswith(("model.", "data.", "trainer.")):
                raise InputError(f"{path}: params.{key} is not a --model.*, --data.* or --trainer.* option.")
            categorical = isinstance(spec, dict) and isinstance(spec.get("choices"), list) and spec["choices"]
            ranged = isinstance(spec, dict) and {"low", "high"} <= set(spec)
            if not (categorical or ranged):
                raise InputError(
                    f"{path}: params.{key}={spec!r} needs either 'choices: [...]' or 'low' and 'high' "
                    "(with optional 'log: true' or 'step')."
                )

    @property
    def study_direction(self) -> str:
        return self.direction or ("maximize" if self.metric == "val/r2" else "minimize")

    def suggest(self, trial) -> list[str]:
        """The trial's values, as flags of ``scripts/train.py`` in the file's order."""
        flags = []
        for key, spec in self.params.items():
            if "choices" in spec:
                value = trial.suggest_categorical(key, spec["choices"])
            else:
                kwargs = {k: spec[k] for k in ("log", "step") if k in spec}
                integer = all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("low", "high"))
                suggest = trial.suggest_int if integer else trial.suggest_float
                value = suggest(key, spec["low"], spec["high"], **kwargs)
            flags.append(f"--{key}={value if isinstance(value, str) else json.dumps(value)}")
        return flags


class TrialPruning(Callback):
    """Reports the monitored validation metric of each epoch to an Optuna trial, which may prune
    the run (optuna-integration's ``PyTorchLightningPruningCallback``), and keeps the last value:
    the trial's score. Given by class path to a trial that runs in subprocesses; in-process trials
    use ``TrialPruning.of(trial, monitor)``."""

    def __init__(self, storage: str, study_name: str, trial_id: int, monitor: str) -> None:
        optuna = require_optuna()
        study = optuna.load_study(study_name=study_name, storage=storage)
        self._init(optuna.trial.Trial(study, trial_id), monitor)

    @classmethod
    def of(cls, trial, monitor: str) -> TrialPruning:
        callback = cls.__new__(cls)
        callback._init(trial, monitor)
        return callback

    def _init(self, trial, monitor: str) -> None:
        from optuna_integration.pytorch_lightning import PyTorchLightningPruningCallback

        self.trial, self.monitor, self.score = trial, monitor, None
        self.pruning = PyTorchLightningPruningCallback(trial, monitor)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.pruning.on_fit_start(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self.monitor in trainer.callback_metrics:
            self.score = float(trainer.callback_metrics[self.monitor])
            if trainer.is_global_zero:  # the parent of a subprocess trial reads it from the storage
                self.trial.set_user_attr("score", self.score)
        self.pruning.on_validation_end(trainer, pl_module)


class _ParseOnly(TrainCLI):
    """``scripts/train.py``'s parser alone: the resolved config of a command, nothing instantiated."""

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass


def resolved_config(args: list[str]):
    return _ParseOnly(args).config


def needs_processes(trainer_config) -> bool:
    """Whether the trainer config launches several processes (DDP and its kind, several devices or
    nodes): Lightning would then re-run the command line in every rank."""
    strategy = trainer_config.strategy
    name = strategy if isinstance(strategy, str) else getattr(strategy, "class_path", type(strategy).__name__)
    if trainer_config.num_nodes > 1 or any(kind in str(name).lower() for kind in MULTI_PROCESS_STRATEGIES):
        return True
    devices = trainer_config.devices
    if devices == "auto":
        return trainer_config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.device_count() > 1
    if isinstance(devices, (list, tuple)):
        return len(devices) > 1
    text = str(devices).strip()
    if "," in text.rstrip(","):
        return len([d for d in text.split(",") if d.strip()]) > 1
    return text == "-1" or (text.isdigit() and int(text) > 1)


def _optuna_object(module, spec, what: str, **extra):
    """A pruner or sampler from ``NAME`` or ``{class: NAME, ...arguments}``."""
    if spec is None:
        return None
    if isinstance(spec, str):
        name, kwargs = spec, {}
    else:
        name, kwargs = spec.get("class"), {k: v for k, v in spec.items() if k != "class"}
    cls = getattr(module, str(name), None)
    if not isinstance(cls, type):
        raise InputError(f"{what}={spec!r}: '{name}' is not a class of {module.__name__}; e.g. {what}: MedianPruner.")
    kwargs.update(extra)
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise InputError(f"{what}={spec!r} is invalid: {error}.") from None


class Tuner:
    """One Optuna study over ``scripts/train.py`` runs.

    Parameters
    ----------
    space : SearchSpace
        What to sample and what to optimize.
    train_args : list of str
        The training command's flags (``--config``, ``--trainer.*`` ...); the sampled flags come after.
    study_name : str
        Names the study in the storage and the folder of its trials.
    storage : str, optional
        An Optuna storage URL; default SQLite ``optuna.db`` in the experiment folder.
    """

    def __init__(self, space: SearchSpace, train_args: list[str], study_name: str, storage: str | None = None) -> None:
        self.optuna = require_optuna()
        self.space, self.train_args, self.study_name = space, list(train_args), study_name
        logger = resolved_config(self.train_args).trainer.logger
        init_args = getattr(logger, "init_args", None)
        if not logger or init_args is None or "save_dir" not in init_args:
            raise InputError("tuning writes each trial as a run of the logger's experiment; keep --trainer.logger on.")
        self.experiment_name = str(init_args.name)
        self.experiment = Path(init_args.save_dir) / self.experiment_name
        self.folder = self.experiment / study_name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.storage = storage or f"sqlite:///{(self.experiment / 'optuna.db').resolve()}"
        self.study = self._load_study()

    def _load_study(self):
        optuna = self.optuna
        try:
            study = optuna.create_study(
                study_name=self.study_name,
                storage=self.storage,
                load_if_exists=True,
                direction=self.space.study_direction,
                pruner=_optuna_object(optuna.pruners, self.space.pruner, "pruner") or optuna.pruners.NopPruner(),
            )
        except (ValueError, ImportError) as error:  # a malformed URL, a missing database driver
            raise InputError(f"--storage {self.storage!r} cannot hold a study: {error}") from None
        if study.direction.name.lower() != self.space.study_direction:
            raise InputError(
                f"study '{self.study_name}' in {self.storage} is to {study.direction.name.lower()}, but the search "
                f"space says {self.space.study_direction}; choose another --study_name."
            )
        # A seeded sampler is offset by the trials already there, so a resumed study does not
        # repeat the parameters it began with.
        sampler = self.space.sampler
        seed = {"seed": sampler["seed"] + len(study.trials)} if isinstance(sampler, dict) and "seed" in sampler else {}
        sampler = _optuna_object(optuna.samplers, sampler, "sampler", **seed)
        if sampler is not None:
            study.sampler = sampler
        return study

    def finished(self) -> int:
        states = (self.optuna.trial.TrialState.COMPLETE, self.optuna.trial.TrialState.PRUNED)
        return len(self.study.get_trials(deepcopy=False, states=states))

    def retry_lost_trials(self) -> list[int]:
        """Queue again the parameters of trials that ended without an answer: those whose process
        died mid-trial (still running in the storage, on this machine, their process gone: marked
        failed now) and those stopped by Ctrl-C or SIGTERM. Each is retried once; returns their numbers."""
        TrialState = self.optuna.trial.TrialState
        trials = self.study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get("retry_of") for t in trials}
        host, lost = socket.gethostname(), []
        for trial in trials:
            pid = trial.user_attrs.get("pid")
            dead = trial.state == TrialState.RUNNING and trial.user_attrs.get("host") == host and pid is not None
            dead = dead and not process_is_alive(pid)  # another machine's, or alive: its own process finishes it
            interrupted = trial.state == TrialState.FAIL and trial.user_attrs.get("interrupted")
            if (dead or interrupted) and trial.number not in retried:
                if dead:
                    self.study.tell(trial.number, state=TrialState.FAIL)
                self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
                lost.append(trial.number)
        return lost

    def run(self, n_trials: int) -> dict:
        """Run trials until ``n_trials`` have finished in the study; write the best config and the
        figures; returns a short summary."""
        if n_trials < 1:
            raise InputError(f"--n_trials={n_trials} must be >= 1.")
        if retried := self.retry_lost_trials():
            print(f"trial(s) {retried} stopped mid-run (killed or interrupted): queued again")
        failed_at_start = self._count_failed()
        while (remaining := n_trials - self.finished()) > 0:
            if self._count_failed() - failed_at_start >= n_trials:
                raise InputError(
                    f"{n_trials} trials failed (NaN or infinite {self.space.metric}); narrow the search space."
                )
            self.study.optimize(self.objective, n_trials=remaining)
        return self.write_results()

    def _count_failed(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(self.optuna.trial.TrialState.FAIL,)))

    def objective(self, trial) -> float:
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        run_dir = self.folder / f"trial_{trial.number}"
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        args = [
            *self.train_args,
            *self.space.suggest(trial),
            f"--trainer.logger.init_args.name={self.experiment_name}/{self.study_name}",
            f"--trainer.logger.init_args.version=trial_{trial.number}",
        ]
        trial.set_user_attr("args", args)
        try:
            if needs_processes(resolved_config(args).trainer):
                score = self._in_subprocesses(trial, args)
            else:
                pruning = TrialPruning.of(trial, self.space.metric)
                train(args, callbacks=[pruning])
                score = pruning.score
        except INTERRUPTS:
            # Stopped by the user, not by its parameters: the next run tries them again.
            trial.set_user_attr("interrupted", True)
            raise
        if score is None:
            raise InputError(
                f"trial {trial.number} logged no {self.space.metric}; validation must run (check --data.val_fraction "
                "and --trainer.check_val_every_n_epoch)."
            )
        return score

    def _in_subprocesses(self, trial, args: list[str]) -> float:
        """Run the trial as ``python -m linreg_pl`` (its ranks are that command's processes)."""
        reporter = [
            f"--trainer.callbacks+={TRIAL_PRUNING}",
            f"--trainer.callbacks.init_args.storage={self.storage}",
            f"--trainer.callbacks.init_args.study_name={self.study_name}",
            f"--trainer.callbacks.init_args.trial_id={trial._trial_id}",
            f"--trainer.callbacks.init_args.monitor={self.space.metric}",
        ]
        completed = subprocess.run([sys.executable, "-m", "linreg_pl", *args, *reporter])
        if completed.returncode != 0:
            raise InputError(
                f"trial {trial.number} ended with exit status {completed.returncode} (its output is above)."
            )
        # Pruned under DDP: the ranks stopped early and left the verdict in the storage.
        TrialPruning.of(trial, self.space.metric).pruning.check_pruned()
        running = self.study.get_trials(deepcopy=False, states=(self.optuna.trial.TrialState.RUNNING,))
        return next(t.user_attrs.get("score") for t in running if t.number == trial.number)

    def write_results(self) -> dict:
        """``best.yaml`` and the figures in the study folder."""
        best = self.study.best_trial
        config_path = self.folder / "best.yaml"
        write_text_atomically(config_path, self.best_config(best))
        figures = self.save_figures()
        summary = {
            "study": self.study_name,
            "storage": self.storage,
            "best_trial": best.number,
            self.space.metric: best.value,
            "params": best.params,
            "run_dir": best.user_attrs.get("run_dir"),
            "config": str(config_path),
            "figures": [str(p) for p in figures],
        }
        print(
            f"best trial {best.number}: {self.space.metric} {best.value:.6g} with {best.params}\n"
            f"reproduce: python scripts/train.py --config {config_path}"
        )
        return summary

    def best_config(self, best) -> str:
        """The best trial's resolved config (as the run saved it), made a fresh run's: its own
        version directory under the experiment, no tuning callback."""
        saved = Path(best.user_attrs["run_dir"]) / "config.yaml"
        config = yaml.safe_load(saved.read_text())
        logger = config["trainer"]["logger"]["init_args"]
        logger["name"], logger["version"] = self.experiment_name, None
        config["trainer"]["callbacks"] = [
            c for c in config["trainer"].get("callbacks") or [] if c.get("class_path") != TRIAL_PRUNING
        ]
        config.pop("ckpt_path", None)
        # A run saves a path as it was given, relative to the config file that named it; best.yaml
        # lives elsewhere, so each path becomes absolute.
        for key, value in resolved_config(best.user_attrs["args"]).items():
            if isinstance(value, jsonargparse.Path):
                *parents, name = key.split(".")
                reduce(lambda node, part: node[part], parents, config)[name] = value.absolute
        header = (
            f"# Best of study '{self.study_name}' ({self.storage}): trial {best.number}, "
            f"{self.space.metric} = {best.value!r}\n# with {best.params}. Reproduce: python scripts/train.py --config "
            f"{self.folder / 'best.yaml'}\n"
        )
        return header + yaml.safe_dump(config, sort_keys=False)

    def save_figures(self) -> list[Path]:
        """Optuna's optimization history and parameter importances as PNG files. Importances need
        two complete trials whose parameters differ (Optuna would draw equal bars for fewer); they
        are left out, with a note, until then."""
        import matplotlib

        matplotlib.use("Agg")  # files only: no window, whatever the platform's default backend
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as optuna_plots

        plots = {"history": optuna_plots.plot_optimization_history}
        complete = self.study.get_trials(deepcopy=False, states=(self.optuna.trial.TrialState.COMPLETE,))
        if len({json.dumps(t.params, sort_keys=True) for t in complete}) >= 2:
            plots["importance"] = optuna_plots.plot_param_importances
        else:
            print("no importance figure yet: it needs two complete trials with different parameters")
        saved = []
        for name, plot in plots.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", self.optuna.exceptions.ExperimentalWarning)
                figure = plot(self.study, target_name=self.space.metric).figure
            path = self.folder / f"{name}.png"
            figure.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(figure)
            saved.append(path)
        return saved


def main(args: list[str] | None = None) -> dict:
    """The ``scripts/tune.py`` entry point; flags it does not know go to every training run."""
    parser = argparse.ArgumentParser(
        description="Tune any --model.*, --data.* or --trainer.* option of scripts/train.py with Optuna.",
        epilog="Every other flag (--config, --trainer.*, ...) is passed to each training run.",
    )
    parser.add_argument("--tune", required=True, help="search space YAML, e.g. configs/tune/ridge.yaml")
    parser.add_argument("--n_trials", type=int, default=20, help="finished trials the study should hold (default 20)")
    parser.add_argument("--study_name", help="default: the search space file's name")
    parser.add_argument("--storage", help="Optuna storage URL; default sqlite:///<experiment folder>/optuna.db")
    options, train_args = parser.parse_known_args(sys.argv[1:] if args is None else args)
    require_optuna()
    space = SearchSpace.from_file(options.tune)
    tuner = Tuner(space, train_args, options.study_name or Path(options.tune).stem, options.storage)
    return tuner.run(options.n_trials)
