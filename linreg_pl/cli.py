"""The command line: one LightningCLI family for training, evaluation and prediction.

``TrainCLI`` (``scripts/train.py``) fits and tests; ``linreg_pl.serve`` holds its siblings for
``scripts/evaluate.py`` and ``scripts/predict.py``. All three share the parser, the data-to-model
links, ``--config`` and the user-error handling of ``run_command``.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from importlib import import_module
from pathlib import Path

import yaml
from jsonargparse import ArgumentError

# Private, and the one way to parse without printing: --print_config waits until the config is final.
from jsonargparse._actions import _ActionPrintConfig
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from linreg_pl.callbacks import skip_hooks_not_overridden
from linreg_pl.callbacks.report import RunReport
from linreg_pl.datamodule import RegressionDataModule
from linreg_pl.errors import InputError
from linreg_pl.model import LinearRegression
from linreg_pl.runtime.checkpoints import check_matches, check_resumable, read_checkpoint, resolve_checkpoint
from linreg_pl.runtime.files import visible_name, write_text_atomically
from linreg_pl.runtime.parse_errors import check_config_files, one_line
from linreg_pl.runtime.runs import run_directory
from linreg_pl.runtime.signals import Interrupted, stop_on_signals

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"
DEFAULT_LESSON = PROJECT_ROOT / "configs" / "d2l.yaml"
# What the data module tells the model: its shape, its column names and the coding of categorical columns.
LINKED = ("n_features", "n_targets", "feature_names", "target_names", "encoding")


class SaveConfig(SaveConfigCallback):
    """``config.yaml`` in the run directory, the file LightningCLI's callback writes, but written
    atomically (``linreg_pl.runtime.files``), over an earlier one, and without validating the
    config once more: parsing did (~25 ms a run)."""

    def __init__(self, parser: LightningArgumentParser, config, config_filename: str = "config.yaml") -> None:
        super().__init__(parser, config, config_filename, save_to_log_dir=False)
        self._log_dir: str | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not self.already_saved:
            self._log_dir = trainer.log_dir  # a broadcast: every rank asks, rank 0 writes
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer, pl_module, stage: str) -> None:
        text = self.parser.dump(self.config, skip_none=False, skip_validation=True)
        write_text_atomically(Path(self._log_dir) / self.config_filename, text)


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
        # Parse errors are raised, not printed with the usage, so that run_command gives one line.
        kwargs.setdefault("parser_kwargs", {"default_config_files": files, "exit_on_error": False})
        # A progress bar only where someone watches: on a terminal. A log file gets the report alone.
        defaults = {"enable_progress_bar": sys.stdout.isatty(), "enable_model_summary": False}
        # Unless set, chosen from the data in before_instantiate_classes (validation_every_n_epochs).
        defaults["check_val_every_n_epoch"] = None
        kwargs["trainer_defaults"] = {**defaults, **kwargs.get("trainer_defaults", {})}
        kwargs.setdefault("save_config_callback", SaveConfig)
        super().__init__(
            LinearRegression,
            self.datamodule_class_for_cli,
            args=args,
            run=False,
            seed_everything_default=0,
            auto_configure_optimizers=False,  # the model injects its own optimizer
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--verbose", type=bool, default=False, help="Show Lightning's own messages (devices, restores, tips)."
        )
        # The model's default optimizer, named to the parser so that --model.optimizer.lr 0.1 sets its lr.
        parser.set_defaults({"model.optimizer": "linreg_pl.exact.autosgd.AutoSGD"})
        if self.datamodule_class_for_cli is not None:
            for name in LINKED:
                parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        given = sys.argv[1:] if args is None else list(args)
        check_config_files(given)
        try:
            self.config = parser.parse_args(args)
        except ArgumentError as error:
            raise InputError(one_line(str(error), given)) from None
        # Lightning's info lines (seed, device banners, an advert tip, restores) are not the user's news.
        level = logging.INFO if self.config.verbose else logging.WARNING
        for name in ("lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(level)

    def before_instantiate_classes(self) -> None:
        trainer = self.config.trainer
        for name in AT_LEAST_ONE:
            if trainer[name] is not None and trainer[name] < 1:
                raise InputError(f"--trainer.{name}={trainer[name]} must be an integer >= 1.")
        trainer.callbacks = _callbacks_the_run_supports(trainer)
        data = self.config.get("data")
        if trainer.log_every_n_steps is None and data is not None:
            # Unless set: a point per epoch of full-batch training, per 10 steps of mini-batch
            # training (each logged step costs ~0.5 ms of scalars: a large table's every step would
            # add a third to its training time).
            trainer.log_every_n_steps = 1 if data.batch_size is None else 10
        if trainer.check_val_every_n_epoch is None and not _validates_by_batches(trainer.val_check_interval):
            trainer.check_val_every_n_epoch = validation_every_n_epochs(trainer.max_epochs, data)
        if trainer.logger in (False, None):
            self.save_config_callback = None  # no run directory: never write config.yaml into the cwd

    def instantiate_trainer(self, **kwargs):
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError, ModuleNotFoundError) as error:
            # Lightning checks the Trainer's arguments only here; its messages name the argument.
            accelerator = self.config.trainer.accelerator
            unavailable = isinstance(error, ModuleNotFoundError) or "backend found" in str(error)
            fix = (
                f"; --trainer.accelerator {accelerator} is not available on this machine: use --trainer.accelerator "
                "cpu (or auto, the default, which takes a GPU where there is one)"
                if unavailable or "not available" in str(error)
                else ""
            )
            raise InputError(f"invalid --trainer options: {str(error).rstrip('.!')}{fix}.") from None
        skip_hooks_not_overridden(trainer.callbacks)
        return trainer


class TrainCLI(LinearRegressionCLI):
    """``scripts/train.py``: ``configs/default.yaml`` (the run's machinery) is applied first, from
    any working directory, then the d2l lesson (``configs/d2l.yaml``). When the data source that
    jsonargparse resolves from every layer (configs, a group config ``--data=FILE``, flags, the
    environment) is of another class, the command is parsed again without the lesson: a source
    someone chose gets none of the lesson's settings.

    A class named on top of a config keeps the config's arguments that it also takes
    (jsonargparse's rule, omni-us/jsonargparse#460): ``--model.optimizer Adam`` on the d2l lesson
    runs Adam at the lesson's lr 0.03, ``--config make_regression.yaml --data.source
    SyntheticLinear`` keeps its ``noise`` and ``n_samples``; give those again to change them.
    """

    default_config_files = [DEFAULT_CONFIG, DEFAULT_LESSON]

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_lightning_class_args(RunReport, "report")  # always on: the run's answer, --report.*
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="Resume from this checkpoint; 'last' takes the newest last.ckpt of this experiment.",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        # With the lesson under every layer first: the source jsonargparse resolves from them all says
        # whether another was chosen. The config is printed (--print_config) only once that is known.
        with _ActionPrintConfig.skip_print_config():
            super().parse_arguments(parser, args)
        # A held-back --print_config leaves its request on the parser; the final parse makes it anew.
        print_requested = vars(parser).pop("print_config", None) is not None
        lesson = _lesson_source()
        if lesson is not None and _class_of(self.config.data.source.class_path) is not _class_of(lesson):
            parser.default_config_files = [str(DEFAULT_CONFIG)] if DEFAULT_CONFIG.is_file() else []
        elif not print_requested:
            return
        super().parse_arguments(parser, args)


# Trainer counts that Lightning divides by without checking them first.
AT_LEAST_ONE = ("check_val_every_n_epoch", "log_every_n_steps", "accumulate_grad_batches")
# Callbacks that need a part of the run that the Trainer's flags can turn off.
_NEEDS = {ModelCheckpoint: "enable_checkpointing", LearningRateMonitor: "logger"}


def validation_every_n_epochs(max_epochs: int | None, data) -> int:
    """Unless set: every epoch of mini-batch training; about 100 validations over ``max_epochs`` of
    full-batch training, whose every epoch is one step. A validation (its metrics, the best
    checkpoint) costs a few times the step: validating every epoch of a 1000-epoch table run tripled
    its training time.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> validation_every_n_epochs(1000, SimpleNamespace(batch_size=None))
    10
    >>> validation_every_n_epochs(60, SimpleNamespace(batch_size=None)), validation_every_n_epochs(1000, None)
    (1, 1)
    >>> validation_every_n_epochs(10, SimpleNamespace(batch_size=32))
    1
    """
    if data is None or data.batch_size is not None or max_epochs is None or max_epochs < 1:
        return 1
    return max(1, max_epochs // 100)


def _validates_by_batches(val_check_interval) -> bool:
    """Lightning's ``check_val_every_n_epoch=None``: validation counted in batches (an int) or in time."""
    return val_check_interval is not None and not isinstance(val_check_interval, float)


def _lesson_source() -> str | None:
    """The default lesson's data source class; None where the configs are not beside the package (an
    installed wheel), which then runs without them."""
    if not DEFAULT_LESSON.is_file():
        return None
    return yaml.safe_load(DEFAULT_LESSON.read_text())["data"]["source"]["class_path"]


def _class_of(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(import_module(module), name)


def _callbacks_the_run_supports(trainer_config) -> list:
    """The configured callbacks, less those whose prerequisite the run turned off: with
    ``--trainer.enable_checkpointing false`` or ``--trainer.logger false`` the flag wins."""
    kept = []
    for callback in trainer_config.callbacks or []:
        cls = _class_of(callback.class_path)
        if not any(issubclass(cls, kind) and trainer_config[flag] is False for kind, flag in _NEEDS.items()):
            kept.append(callback)
    return kept


def train(args: list[str] | None = None, callbacks: Sequence[Callback] = ()) -> dict:
    """Fit, then test the trained model; returns the summary the ``RunReport`` callback wrote.
    ``callbacks`` join the configured ones (a tuning trial's reporter) without entering config.yaml."""
    cli = TrainCLI(args, trainer_defaults={"callbacks": list(callbacks)})
    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
    # Claims version_N now (atomically; under ddp_spawn, fit and test run in fresh processes that
    # would otherwise each take the next free one) and removes it again if the run fails to start.
    with run_directory(trainer, cli.config.ckpt_path):
        ckpt_path = resolve_checkpoint(cli.config.ckpt_path, trainer)
        if ckpt_path is not None:
            checkpoint = read_checkpoint(ckpt_path)
            check_matches(checkpoint, ckpt_path, model)
            if isinstance(datamodule, RegressionDataModule):
                datamodule.resume_with(checkpoint)
            if cli.config.ckpt_path == "last":
                check_resumable(checkpoint, ckpt_path, trainer, datamodule.hparams.get("source"))
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        # The trained model itself is tested (and reported): the answer training reached, which is
        # the least-squares optimum once StopAtOptimum stops it. It is also last.ckpt.
        trainer.test(model, datamodule=datamodule, verbose=False)
        report = next((c for c in trainer.callbacks if isinstance(c, RunReport)), None)
        return report.summary if report is not None else {}


def cli_main(args: list[str] | None = None) -> None:
    """The ``scripts/train.py`` entry point."""
    run_command(train, args)


def ignore_third_party_warnings() -> None:
    """The one set of warning filters (the tests apply it too): what Lightning 2.6, torch 2.13,
    jsonargparse and TensorBoard say on every run and no user can act on."""
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r".*skip_none parameter was deprecated")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"tensorboard\..*")
    # A streamed dataset knows its length; Lightning warns about any IterableDataset that does.
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
    # log_every_n_steps counts steps across epochs: a full-batch lesson logs every few epochs.
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")
    # A resumed run logs to a new version directory by design (--ckpt_path last finds the old one).
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")


def run_command(
    command: Callable[[list[str] | None], object],
    args: list[str] | None = None,
    output_option: str = "--trainer.logger.init_args.save_dir",
) -> None:
    """Run an entry point; every way it can end is one line on stderr and an exit status: a user
    error 2, Ctrl-C or SIGTERM 130 or 143, a full disk 1. ``output_option`` is the option that
    chooses where the command writes, named when it cannot write there.

    Set ``LINREG_PL_VERBOSE=1`` to see the traceback of user errors too.
    """
    ignore_third_party_warnings()
    previous_hook = threading.excepthook
    threading.excepthook = _quiet_when_out_of_space(previous_hook)
    try:
        with stop_on_signals():
            command(args)
    except InputError as error:
        if os.environ.get("LINREG_PL_VERBOSE"):
            raise
        _exit(f"error: {error}", 2)
    except OSError as error:
        if error.errno in OUT_OF_SPACE:
            place = Path(visible_name(error.filename or ".")).resolve()
            _exit(
                f"error: cannot write '{place}' ({error.strerror}; {_free_space(place)}); free some space, raise the "
                f"file size limit (ulimit -f), or write elsewhere with {output_option}.",
                1,
            )
        if error.filename is None:  # not about a path the user chose
            raise
        _exit(
            f"error: cannot write '{visible_name(error.filename)}' ({error.strerror}); choose a writable place with "
            f"{output_option}, or fix its permissions.",
            2,
        )
    except KeyboardInterrupt:  # Ctrl-C before stop_on_signals was in place (Lightning's own path re-raises it)
        _exit("error: interrupted (SIGINT); nothing was saved", 128 + signal.SIGINT)
    except Interrupted as stop:
        if not stop.at_agreed_step:  # GracefulStop's stop has said what it saved
            _exit(
                f"error: interrupted ({signal.Signals(stop.signum).name}) outside a training step; nothing saved",
                stop.code,
            )
        raise
    except SIGTERMException:  # a SystemExit without a code: it would exit 0
        sys.exit(128 + signal.SIGTERM)
    finally:
        threading.excepthook = previous_hook


# A full disk, a file size limit (ulimit -f) and a full quota.
OUT_OF_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def _quiet_when_out_of_space(hook: Callable) -> Callable:
    """TensorBoard writes events in a thread of its own; on a full disk that thread prints a
    traceback before the main thread fails on the same write (and says it in one line)."""

    def excepthook(args: threading.ExceptHookArgs) -> None:
        if not (isinstance(args.exc_value, OSError) and args.exc_value.errno in OUT_OF_SPACE):
            hook(args)

    return excepthook


def _free_space(path: Path) -> str:
    existing = next((p for p in [path, *path.parents] if p.exists()), Path("/"))
    return f"{shutil.disk_usage(existing).free / 1e6:.1f} MB free on its disk"


def _exit(line: str, status: int) -> None:
    print(line, file=sys.stderr)
    sys.exit(status)
