"""The command line: one LightningCLI family for training, evaluation and prediction.

``TrainCLI`` (``scripts/train.py``) fits and tests; ``linreg_pl.inference`` holds its siblings for
``scripts/evaluate.py`` and ``scripts/predict.py``. All three share the parser, the data-to-model
links, ``--config`` and the user-error handling of ``run_command``.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from collections.abc import Callable
from importlib import import_module
from pathlib import Path

from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from linreg_pl.checkpoints import check_matches, read_checkpoint, resolve_checkpoint
from linreg_pl.data import RegressionDataModule
from linreg_pl.errors import InputError
from linreg_pl.model import LinearRegression
from linreg_pl.report import RunReport
from linreg_pl.runs import run_directory

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"
# What the data module tells the model: its shape, its column names and the fast path's setting.
LINKED = ("n_features", "n_targets", "feature_names", "target_names", "steps_per_batch")


class LinearRegressionCLI(LightningCLI):
    """LightningCLI for ``LinearRegression`` on a ``RegressionDataModule`` (``run=False``: the
    entry point decides what to run). The data module's shape and names are linked into the model.

    Subclasses set ``default_config_files`` (applied before any ``--config``) and add their own
    arguments in ``add_arguments_to_parser``.
    """

    default_config_files: list[Path] = []
    datamodule_class_for_cli: type | None = RegressionDataModule

    def __init__(self, args: list[str] | None = None, **kwargs) -> None:
        files = [str(path) for path in self.default_config_files if path.is_file()]
        kwargs.setdefault("parser_kwargs", {"default_config_files": files})
        super().__init__(
            LinearRegression,
            self.datamodule_class_for_cli,
            args=args,
            run=False,
            save_config_kwargs={"overwrite": True},
            seed_everything_default=0,
            auto_configure_optimizers=False,  # the model injects its own optimizer
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        if self.datamodule_class_for_cli is not None:
            for name in LINKED:
                parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        self.config.trainer.callbacks = _callbacks_the_run_supports(self.config.trainer)

    def instantiate_trainer(self, **kwargs):
        try:
            return super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError) as error:
            # Lightning checks the Trainer's arguments only here; its messages name the argument.
            raise InputError(f"invalid --trainer options: {error}") from None


class TrainCLI(LinearRegressionCLI):
    """``scripts/train.py``: ``configs/default.yaml`` (the d2l lesson and the run's callbacks) is
    applied first, from any working directory."""

    default_config_files = [DEFAULT_CONFIG]

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="Resume from this checkpoint; 'last' takes the newest last.ckpt of this experiment.",
        )


# Callbacks that need a part of the run that the Trainer's flags can turn off.
_NEEDS = {ModelCheckpoint: "enable_checkpointing", LearningRateMonitor: "logger"}


def _callbacks_the_run_supports(trainer_config) -> list:
    """The configured callbacks, less those whose prerequisite the run turned off: with
    ``--trainer.enable_checkpointing false`` or ``--trainer.logger false`` the flag wins."""
    kept = []
    for callback in trainer_config.callbacks or []:
        module, _, name = callback.class_path.rpartition(".")
        cls = getattr(import_module(module), name)
        if not any(issubclass(cls, kind) and trainer_config[flag] is False for kind, flag in _NEEDS.items()):
            kept.append(callback)
    return kept


def train(args: list[str] | None = None) -> dict:
    """Fit, then test the best checkpoint; returns the summary the ``RunReport`` callback wrote."""
    cli = TrainCLI(args)
    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
    # Claims version_N now (atomically; under ddp_spawn, fit and test run in fresh processes that
    # would otherwise each take the next free one) and removes it again if the run fails to start.
    with run_directory(trainer, cli.config.ckpt_path):
        if not model.automatic_optimization and (trainer.gradient_clip_val or trainer.accumulate_grad_batches > 1):
            raise InputError(
                f"data.steps_per_batch={datamodule.steps_per_batch} runs several optimizer steps per batch, which "
                "Lightning's gradient clipping and accumulation do not support; drop --trainer.gradient_clip_val and "
                "--trainer.accumulate_grad_batches, or set data.steps_per_batch 1."
            )
        ckpt_path = resolve_checkpoint(cli.config.ckpt_path, trainer)
        if ckpt_path is not None:
            check_matches(read_checkpoint(ckpt_path), ckpt_path, datamodule.n_features, datamodule.n_targets)
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None else ""
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=True)
        report = next((c for c in trainer.callbacks if isinstance(c, RunReport)), None)
        return report.summary if report is not None else {}


def cli_main(args: list[str] | None = None) -> None:
    """The ``scripts/train.py`` entry point."""
    run_command(train, args)


def run_command(command: Callable[[list[str] | None], object], args: list[str] | None = None) -> None:
    """Run an entry point; a user error ends in its one-line message and exit status 2.

    Set ``LINREG_PL_VERBOSE=1`` to see the traceback of user errors too.
    """
    # Lightning 2.6 trips deprecations in torch's pytree and in jsonargparse on every run; neither is
    # the user's to fix.
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)")
    try:
        command(args)
    except InputError as error:
        if os.environ.get("LINREG_PL_VERBOSE"):
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except SIGTERMException:  # a SystemExit without a code: it would exit 0
        sys.exit(128 + signal.SIGTERM)
