"""The command line: LightningCLI with the data-to-model links, the report and user-error handling."""

from __future__ import annotations

import os
import signal
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from linreg_pl.callbacks import DivergenceGuard, FitFigures, HyperparameterMetrics, ParameterTrajectory
from linreg_pl.checkpoints import (
    AtomicCheckpointIO,
    LastCheckpoint,
    check_matches,
    read_checkpoint,
    resolve_checkpoint,
)
from linreg_pl.data import RegressionDataModule
from linreg_pl.errors import InputError
from linreg_pl.model import LinearRegression
from linreg_pl.report import format_report, summarize, write_summary

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"


class LinearRegressionCLI(LightningCLI):
    """LightningCLI for ``LinearRegression`` on a ``RegressionDataModule``; ``configs/default.yaml``
    (the d2l set) is applied first, from any working directory."""

    def __init__(self, args: list[str] | None = None, **kwargs) -> None:
        parser_kwargs = {"default_config_files": [str(DEFAULT_CONFIG)] if DEFAULT_CONFIG.is_file() else []}
        super().__init__(
            LinearRegression,
            RegressionDataModule,
            args=args,
            run=False,
            parser_kwargs=parser_kwargs,
            save_config_kwargs={"overwrite": True},
            seed_everything_default=0,
            auto_configure_optimizers=False,  # the model injects its own optimizer
            trainer_defaults={
                "callbacks": [
                    DivergenceGuard(),
                    LastCheckpoint(),
                    ParameterTrajectory(),
                    FitFigures(),
                    HyperparameterMetrics(),
                ],
            },
            **kwargs,
        )

    def instantiate_trainer(self, **kwargs) -> Trainer:
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        callbacks = [self._get(self.config_init, key) for key in self._parser(self.subcommand).callback_keys]
        if config.get("enable_checkpointing") is False:  # the flag wins over the --checkpoint.* callback
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        trainer = self._instantiate_trainer(config, callbacks)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # keep a user's own plugin
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in ("n_features", "n_targets", "feature_names", "target_names", "steps_per_batch"):
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="Resume from this checkpoint; 'last' takes the newest last.ckpt of this experiment.",
        )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/loss",
                "checkpoint.save_last": False,  # LastCheckpoint writes last.ckpt every epoch
                "checkpoint.filename": "best-epoch{epoch}-step{step}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )


def train(args: list[str] | None = None) -> dict:
    """Fit, test the best checkpoint, and write the report; returns the summary."""
    cli = LinearRegressionCLI(args)
    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
    if trainer.logger is not None:
        # Fix the run's version_N now: under ddp_spawn, fit and test run in fresh processes that
        # would otherwise each take the next free version directory.
        _ = trainer.logger.version
    if not model.automatic_optimization and (trainer.gradient_clip_val or trainer.accumulate_grad_batches > 1):
        raise InputError(
            f"data.steps_per_batch={datamodule.steps_per_batch} runs several optimizer steps per batch, which "
            "Lightning's gradient clipping and accumulation do not support; drop --trainer.gradient_clip_val and "
            "--trainer.accumulate_grad_batches, or set data.steps_per_batch 1."
        )
    ckpt_path = resolve_checkpoint(cli.config.ckpt_path, trainer)
    if ckpt_path is not None:
        check_matches(read_checkpoint(ckpt_path), ckpt_path, datamodule.n_features, datamodule.n_targets)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None else ""
    test_metrics = trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=True)
    summary = summarize(trainer, model, datamodule, test_metrics[0], time.perf_counter() - start)
    if trainer.is_global_zero:
        write_summary(summary)
        print(format_report(summary))
    return summary


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
