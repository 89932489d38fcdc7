"""RegressionDataModule: loads a source, splits it, fits the standardization and batches it.

Everything is validated and computed in ``__init__`` (in-memory data is loaded there; streamed files
get one first pass, see ``linreg_pl.data.streaming``), so a bad file or split fails before any training
starts and ``n_features`` is known when the CLI links it into the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from linreg_pl.data.batching import batch_bounds, rank_share, training_steps
from linreg_pl.data.checks import check_finite, check_range, check_resolution, check_target_varies, check_width
from linreg_pl.data.encoding import Encoding
from linreg_pl.data.sources import DataSource
from linreg_pl.data.streaming import StreamedSplits, StreamingSource
from linreg_pl.errors import InputError
from linreg_pl.exact.solvers import Accumulator, ExactLeastSquares, Moments
from linreg_pl.model import LinearRegression
from linreg_pl.scaling import Scaling

STAGES = ("train", "val", "test")
# steps_per_batch="auto": at most this many optimizer steps, and rows, per Lightning batch. Past
# 100 steps Lightning's per-batch cost (~0.5 ms) is a few per cent of a batch even of the smallest steps.
AUTO_MAX_STEPS = 100
AUTO_MAX_ROWS = 2**18


def gather(tensors: tuple[torch.Tensor, ...], index: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The rows ``index`` of each tensor. ``index_select`` copies whole rows: on the CPU it is about
    four times faster than ``tensor[index]`` (1e6 x 100 float32, 4096 rows: 0.35 vs 1.35 ms, most
    of a step), which goes through the general advanced-indexing kernel."""
    return tuple(tensor.index_select(0, index) for tensor in tensors)


class MiniBatches:
    """The mini-batches of one Lightning batch when it carries several optimizer steps.

    Each is gathered just before its step: gathering all at once would push them out of the CPU
    cache before they are used.
    """

    def __init__(self, tensors: tuple[torch.Tensor, ...], indices: list[torch.Tensor]) -> None:
        self.tensors, self.indices = tensors, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for index in self.indices:
            yield gather(self.tensors, index)


class InMemoryBatches:
    """Batches of in-memory tensors: one vectorized index per batch, no per-sample fetch.

    Each process takes its share of the rows by the rule of ``linreg_pl.data.batching``: for
    training, of a permutation common to all ranks (drawn from ``seed`` and the epoch) when
    shuffling; for evaluation, contiguous slices (views: nothing is copied).
    Batches are ``(x, y)``, or ``(x, y, weight)`` when ``weight`` (n,) is given.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int | None,
        shuffle: bool,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        train: bool = True,
        steps_per_batch: int = 1,
        weight: torch.Tensor | None = None,
    ) -> None:
        self.x, self.shuffle, self.seed, self.epoch = x, shuffle, seed, epoch
        self.tensors = (x, y) if weight is None else (x, y, weight)
        self.steps_per_batch, self.train = steps_per_batch, train
        self.bounds = batch_bounds(len(x), rank, world_size, batch_size, equal_steps=train)

    def __len__(self) -> int:
        return -(-(len(self.bounds) - 1) // self.steps_per_batch)

    def __iter__(self) -> Iterator:
        bounds = self.bounds
        if not self.train:  # contiguous slices are views: evaluation copies nothing
            for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
                yield tuple(tensor[start:stop] for tensor in self.tensors)
            return
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch())
            rows = torch.randperm(len(self.x), generator=generator).to(self.x.device)
        else:
            rows = torch.arange(len(self.x), device=self.x.device)
        indices = [rows[start:stop] for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]
        if self.steps_per_batch == 1:
            for index in indices:
                yield gather(self.tensors, index)
            return
        for k in range(0, len(indices), self.steps_per_batch):
            yield MiniBatches(self.tensors, indices[k : k + self.steps_per_batch])


class RegressionDataModule(L.LightningDataModule):
    """Splits, standardizes and batches a regression ``DataSource``.

    Parameters
    ----------
    source : DataSource
        Where the data comes from (``SyntheticLinear``, ``Points``, ``MakeRegression``,
        ``SklearnDataset``, ``CSVSource``, or ``ParquetSource`` for files streamed from disk).
    val_fraction, test_fraction : float
        Shares of the rows held out for validation and test, each in [0, 1) and together below 1.
        A non-zero share keeps at least one row. A share of 0 leaves that split empty, and the
        stage then evaluates on the training rows (the four-point lesson trains and scores on all
        four points); the report says so.
    seed : int
        Seed of the split and of the per-epoch shuffling: the same seed gives the same splits.
    standardize_features : bool, optional
        Standardize each feature with the training split's mean and standard deviation. Default:
        the source's choice (on for CSV and real data, off for the textbook sets).
    standardize_target : bool
        Standardize the target likewise. Reported parameters and metrics stay in original units.
    batch_size : int, optional
        Rows per optimizer step and process; None (default) for full-batch gradient descent, which
        reaches the exact optimum (mini-batch SGD at a constant step stalls at a noise floor).
        Under DDP the global batch is ``batch_size * world_size``.
    shuffle : bool
        Reshuffle the training rows every epoch.
    steps_per_batch : int or "auto"
        Optimizer steps per Lightning batch. 1: one step per batch, Lightning's automatic
        optimization. Above 1, each Lightning batch carries that many mini-batches and
        ``LinearRegression`` steps through them itself (in memory: the same updates, in the same
        order; streamed files shuffle within windows of whole Lightning batches), which spreads
        Lightning's per-batch cost (~0.5 ms) over them; the Trainer's gradient clipping and
        accumulation are then not available. "auto" (default): up to ``AUTO_MAX_STEPS`` (fewer for
        big batches), in equal groups per epoch, where the module is a ``LinearRegression`` and the
        Trainer's flags allow it, and one line says so; the logged curves, snapshots and
        checkpoints keep counting optimizer steps. What counts Lightning batches itself (a
        ``LearningRateMonitor`` logging by step, ``ModelCheckpoint(every_n_train_steps)``) sees
        fewer of them: set 1 for those.
    encoding : dict, optional
        The coding of categorical columns (``linreg_pl.data.encoding``): a trained model's, which
        evaluation applies to its data. Default: learned from the training split.

    Examples
    --------
    >>> from linreg_pl import SyntheticLinear
    >>> dm = RegressionDataModule(SyntheticLinear(weight=[2.0, -3.4], bias=4.2), batch_size=10)
    >>> dm.n_features, dm.n_targets, dm.split_sizes
    (2, 1, {'train': 800, 'val': 100, 'test': 100})
    """

    def __init__(
        self,
        source: DataSource,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        standardize_features: bool | None = None,
        standardize_target: bool = False,
        batch_size: int | None = None,
        shuffle: bool = True,
        steps_per_batch: int | Literal["auto"] = "auto",
        encoding: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # Stored as plain values, so that checkpoints load with weights_only and rebuild the data.
        self.hparams["source"] = source.config()
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 <= value < 1:
                raise InputError(f"data.{name}={value} must be in [0, 1).")
        if val_fraction + test_fraction >= 1:
            raise InputError(
                f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction:g} must be "
                "below 1 so that rows are left to train on."
            )
        if batch_size is not None and batch_size < 1:
            raise InputError(f"data.batch_size={batch_size} must be >= 1, or null for full-batch training.")
        if steps_per_batch != "auto" and not (isinstance(steps_per_batch, int) and steps_per_batch >= 1):
            raise InputError(f"data.steps_per_batch={steps_per_batch!r} must be an integer >= 1, or auto.")
        self.source, self.seed, self.batch_size, self.shuffle = source, seed, batch_size, shuffle
        # Full-batch training has one step per epoch, whatever is asked; "auto" is settled in setup("fit").
        self.steps_per_batch = steps_per_batch if batch_size is not None and steps_per_batch != "auto" else 1
        if standardize_features is None:
            standardize_features = source.standardize_by_default
        self.standardize_features, self.standardize_target = standardize_features, standardize_target
        self._tensors: dict[str, tuple[torch.Tensor, ...]] = {}
        self._train_statistics: dict[str, Accumulator] = {}
        self._resumed_steps_per_batch: int | None = None
        self.encoder: Encoding | None = None
        if isinstance(source, StreamingSource):
            # Files larger than memory: one validating pass now, the rows stream when training.
            self.stream: StreamedSplits | None = StreamedSplits(source, seed, val_fraction, test_fraction, encoding)
            self.encoder = source.encoding
            self.table = self.stream.table()
            check_width(len(self.table.feature_names))
            self.scaling = self.stream.scaling(standardize_features, standardize_target)
            if self.encoder is not None:
                self.save_hyperparameters({**self.hparams, "encoding": self.encoding})
            return
        self.stream = None
        self.table = source.load()
        check_width(len(self.table.feature_names))
        check_finite(self.table)
        check_range(self.table, torch.float64)  # the Trainer's precision is checked in setup()
        n = len(self.table.x)
        n_val, n_test = (_share(n, f) for f in (val_fraction, test_fraction))
        if n - n_val - n_test < 1:
            raise InputError(
                f"the dataset has {n} row{'s' if n != 1 else ''}, too few for val_fraction={val_fraction} and "
                f"test_fraction={test_fraction} (each non-zero share keeps at least one row); "
                "lower the fractions or set them to 0."
            )
        order = np.random.default_rng(seed).permutation(n)
        self.indices = {
            "test": np.sort(order[:n_test]),
            "val": np.sort(order[n_test : n_test + n_val]),
            "train": np.sort(order[n_test + n_val :]),
        }
        if self.table.levels or encoding is not None:
            # Levels from the training rows only, as the standardization: validation and test
            # rows are data the model has not seen.
            self.encoder = (
                Encoding.from_config(encoding) if encoding else Encoding.fit(self.table, self.indices["train"])
            )
            self.table = self.encoder.expand(self.table, source.unseen_levels)
            # Saved again with the learned levels: the checkpoint keeps them, and the logged
            # hyper-parameters agree with the model's (linked) copy.
            self.save_hyperparameters({**self.hparams, "encoding": self.encoding})
            if not self.n_features:
                raise InputError(
                    f"no feature is left: the categorical column(s) {list(self.encoder.levels)} have one level "
                    "in the training rows; add other features or rows."
                )
        if self.table.weight is not None and not self.table.weight[self.indices["train"]].sum() > 0:
            raise InputError("the training rows' weights sum to 0; give some of them a positive weight.")
        if len(self.indices["train"]) < 2 and (standardize_features or standardize_target):
            raise InputError(
                f"the training split has {len(self.indices['train'])} row of {n}; standardizing needs at least 2 to "
                "measure a spread: add rows, lower data.val_fraction and data.test_fraction, or set "
                "data.standardize_features=false (and data.standardize_target=false)."
            )
        x_train, y_train = self.arrays("train")
        check_target_varies(y_train, self.target_names)
        self.scaling = Scaling.fit(
            x_train, y_train, standardize_features, standardize_target, self.feature_names, self.target_names
        )

    # What the CLI links into the model and the report reads.
    @property
    def n_features(self) -> int:
        return self.table.x.shape[1]

    @property
    def n_targets(self) -> int:
        return self.table.y.shape[1]

    @property
    def feature_names(self) -> list[str]:
        return list(self.table.feature_names)

    @property
    def target_names(self) -> list[str]:
        return list(self.table.target_names)

    @property
    def encoding(self) -> dict | None:
        """The coding of categorical columns in plain values (what the model keeps), or None."""
        return self.encoder.config() if self.encoder is not None else None

    @property
    def weighted(self) -> bool:
        return self.stream.weighted if self.stream is not None else self.table.weight is not None

    @property
    def real_data(self) -> bool:
        """CSV files and bundled real sets, as opposed to the textbook lessons' synthetic data."""
        return self.source.standardize_by_default

    @property
    def split_sizes(self) -> dict[str, int]:
        if self.stream is not None:
            return dict(self.stream.sizes)
        return {stage: len(self.indices[stage]) for stage in STAGES}

    def evaluated_split(self, stage: str) -> str:
        """The split a stage scores: itself, or the training rows when it is empty."""
        return stage if self.split_sizes[stage] else "train"

    def train_statistics(self, method: str = "normal") -> Accumulator:
        """The exact solver's one-pass summary of the training rows (``linreg_pl.exact.solvers``), by
        ``method`` "normal" (moments, one pass) or "qr" (a triangular factor, refined in a second
        pass: ``QRFactor.refined``); computed once each."""
        if method == "normal" and self.stream is not None:
            return self.stream.train_moments  # the first pass over the files computed them
        if method not in self._train_statistics:
            # Every process reads every training row (in memory, or from the files): no merge
            # across processes, and every process gets the same answer.
            solver = ExactLeastSquares(self.n_features, self.n_targets, method)
            for x, y, weight in self.train_chunks():
                solver.update(x, y, weight)
            accumulator = solver.compute()
            if method == "qr":
                accumulator = accumulator.refined(self.train_chunks())
            self._train_statistics[method] = accumulator
        return self._train_statistics[method]

    def train_moments(self) -> Moments:
        """Count, means and centred cross-products of the training rows in float64: what the exact
        reference, and any rule built on the data's spectrum (``AutoSGD``), need."""
        return self.train_statistics("normal")

    def arrays(self, stage: str) -> tuple[np.ndarray, np.ndarray]:
        """The float64 rows of a split, in original units (streamed files: up to a million rows,
        else an ``InputError``)."""
        if self.stream is not None:
            return self.stream.arrays(stage)
        index = self.indices[stage]
        return self.table.x[index], self.table.y[index]

    def weights(self, stage: str) -> np.ndarray | None:
        """The row weights (n,) of a split, aligned with ``arrays``; None when unweighted."""
        if self.stream is not None:
            return self.stream.weights(stage)
        if self.table.weight is None:
            return None
        return self.table.weight[self.indices[stage]]

    def train_chunks(
        self, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """Process ``rank``'s share of the training rows as float64 chunks x (m, d), y (m, t) in
        original units, with their weights (m,) or None; each training row is in the share of
        exactly one rank (by default: all rows, in chunks)."""
        if self.stream is not None:
            yield from self.stream.chunks("train", rank, world_size)
            return
        x, y = self.arrays("train")
        weight = self.weights("train")
        share = rank_share(len(x), rank, world_size)
        for start in range(share.start, share.stop, 65536):
            stop = min(start + 65536, share.stop)
            yield x[start:stop], y[start:stop], None if weight is None else weight[start:stop]

    def train_dataloader(self) -> InMemoryBatches | DataLoader:
        return self._batches("train", train=True)

    def val_dataloader(self) -> InMemoryBatches | DataLoader:
        return self._batches(self.evaluated_split("val"), train=False)

    def test_dataloader(self) -> InMemoryBatches | DataLoader:
        return self._batches(self.evaluated_split("test"), train=False)

    def predict_dataloader(self) -> InMemoryBatches | DataLoader:
        return self._batches(self.evaluated_split("test"), train=False)

    def setup(self, stage: str) -> None:
        # The Trainer, hence the precision the data will be held in, is known only now.
        check_range(self.table, self.dtype)
        check_resolution(self.table, self.dtype)
        if stage == "fit" and self.trainer is not None:
            self._settle_steps_per_batch(self.trainer)

    def train_steps_per_epoch(self, world_size: int = 1) -> int:
        """Optimizer steps per epoch of each of ``world_size`` processes."""
        return training_steps(self.split_sizes["train"], world_size, self.batch_size)

    def resume_with(self, checkpoint: dict) -> None:
        """Train on with the optimizer steps per batch of the ``checkpoint`` a fit resumes: Lightning
        counts a resumed epoch's progress in batches, and the global step in one optimization mode."""
        state = checkpoint.get(type(self).__qualname__) or {}
        saved = (checkpoint.get("datamodule_hyper_parameters") or {}).get("steps_per_batch")
        trained = state.get("steps_per_batch", saved if isinstance(saved, int) else 1)  # earlier versions: 1
        asked = self.hparams.steps_per_batch
        if self.batch_size is not None and asked not in ("auto", trained):
            raise InputError(
                f"data.steps_per_batch={asked}, but the checkpoint resumed was trained with {trained} optimizer "
                f"steps per batch; resume with --data.steps_per_batch {trained} (or auto), or start a new run."
            )
        self._resumed_steps_per_batch = trained

    def state_dict(self) -> dict:
        return {"steps_per_batch": self.steps_per_batch}  # what a resumed fit must take again

    def _settle_steps_per_batch(self, trainer: L.Trainer) -> None:
        """Settle ``steps_per_batch`` against the Trainer's flags: "auto" takes several steps per
        batch only where nothing counts Lightning batches; a number the flags cannot honour is an error."""
        resumed = self._resumed_steps_per_batch
        asked = self.hparams.steps_per_batch if resumed is None else resumed
        # Flags that count or change Lightning batches, or act inside Lightning's optimizer step.
        interval = trainer.val_check_interval
        blockers = [
            f"--trainer.{flag}"
            for flag, value in (
                ("gradient_clip_val", trainer.gradient_clip_val),
                ("accumulate_grad_batches", trainer.accumulate_grad_batches > 1),
                ("val_check_interval", isinstance(interval, int) or interval != 1.0),
                ("limit_train_batches", trainer.limit_train_batches != 1.0),
                ("overfit_batches", trainer.overfit_batches > 0),
            )
            if value
        ]
        if asked != "auto":
            self.steps_per_batch = asked if self.batch_size is not None else 1
            if self.steps_per_batch > 1 and blockers:
                given = "" if resumed is None else " (the resumed checkpoint's)"
                raise InputError(
                    f"data.steps_per_batch={asked}{given} runs several optimizer steps per batch, which "
                    f"{' and '.join(blockers)} do not support; drop them"
                    + (", or set --data.steps_per_batch 1." if resumed is None else ", or start a new run.")
                )
            return
        steps = self.train_steps_per_epoch(trainer.world_size)
        # Only LinearRegression steps through a group of mini-batches; any other module gets one each.
        steps_through = isinstance(trainer.lightning_module, LinearRegression)
        if self.batch_size is None or blockers or steps < 2 or not steps_through:
            self.steps_per_batch = 1
            return
        # Bounded by rows as well as steps: one Lightning batch stays a short stretch of training.
        most = max(1, min(AUTO_MAX_STEPS, AUTO_MAX_ROWS // self.batch_size))
        self.steps_per_batch = -(-steps // -(-steps // most))  # equal groups of at most `most`
        if self.steps_per_batch > 1 and trainer.is_global_zero:
            print(
                f"data.steps_per_batch=auto: {self.steps_per_batch} optimizer steps per Lightning batch (the same "
                "updates, less overhead); --data.steps_per_batch 1 takes one per batch."
            )

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the batches: float64 under ``--trainer.precision 64-true``, else float32."""
        double = self.trainer is not None and self.trainer.precision == "64-true"
        return torch.float64 if double else torch.float32

    def _batches(self, split: str, train: bool) -> InMemoryBatches | DataLoader:
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        rows = self.split_sizes[split]
        if 0 < rows < world_size:
            raise InputError(
                f"the {split} split has {rows} rows, fewer than the {world_size} "
                "processes; raise its fraction or use fewer devices."
            )
        if self.stream is not None:
            return self.stream.loader(
                split,
                self.batch_size,
                rank,
                world_size,
                train=train,
                shuffle=self.shuffle,
                epoch=lambda: trainer.current_epoch if trainer is not None else 0,
                steps_per_batch=self.steps_per_batch,
            )
        x, y, *weight = self._device_tensors(split, device)
        return InMemoryBatches(
            x,
            y,
            self.batch_size,
            shuffle=self.shuffle and train,
            seed=self.seed,
            epoch=lambda: trainer.current_epoch if trainer is not None else 0,
            rank=rank,
            world_size=world_size,
            train=train,
            steps_per_batch=self.steps_per_batch if train else 1,
            weight=weight[0] if weight else None,
        )

    def _device_tensors(self, split: str, device: torch.device) -> tuple[torch.Tensor, ...]:
        # Moved once and kept: on a GPU every batch is then a gather in device memory.
        cached = self._tensors.get(split)
        dtype = self.dtype
        if cached is None or cached[0].device != device or cached[0].dtype != dtype:
            weight = self.weights(split)
            arrays = self.arrays(split) if weight is None else (*self.arrays(split), weight)
            cached = tuple(torch.as_tensor(array, dtype=dtype, device=device) for array in arrays)
            self._tensors[split] = cached
        return cached


def _share(n: int, fraction: float) -> int:
    return max(1, round(n * fraction)) if fraction > 0 else 0
