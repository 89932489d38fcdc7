"""Data larger than memory: Parquet or CSV files read in column chunks, never as a whole table.

A *fragment* (one Parquet row group, or one CSV file, gzipped or not) is the unit of reading. The
data module makes one first pass over every fragment (``StreamedSplits``): it validates the files,
counts each fragment's rows per split and accumulates the training rows' moments, from which the
standardization (and the exact least-squares answer) follow. Training then streams.

Splits. Row ``p`` (0-based position within its file) of the file whose path relative to the data
folder is ``key`` falls in test when ``u < test_fraction``, in val when ``u < test_fraction +
val_fraction``, else in train, where ``u`` in [0, 1) is a SplitMix64 hash of (seed, key, p). The
split of a row depends on nothing else: not on the other files, their order, the machine, the
number of processes or workers. Each fraction is the expected share (each row draws independently),
not an exact count as for in-memory data.

Sharding. Each epoch orders the fragments (a permutation drawn from (seed, epoch) when shuffling,
else file order) and so the rows of a split; the processes share that order and cut it into
batches by the rule of in-memory data (``linreg_pl.data.batching``): every row once, as many
training batches on every process. The batches of a process
are dealt in contiguous blocks to its DataLoader workers (global worker ``rank * num_workers +
worker_id``), so a worker reads only the fragments its rows touch. Shuffling permutes the rows within
a window of ``shuffle_rows`` rows (whole batches), seeded by (seed, epoch, window start): a resumed
run replays the same epoch exactly.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Full, Queue
from typing import Literal

import numpy as np
import torch
from jsonargparse.typing import Path_fr, path_type
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from linreg_pl.data.batching import batch_bounds, rank_share
from linreg_pl.data.csv import unknown_column_message
from linreg_pl.data.encoding import Encoding, UnseenLevels, check_level_count
from linreg_pl.data.sources import DataSource, Table
from linreg_pl.errors import InputError
from linreg_pl.exact.solvers import Moments
from linreg_pl.scaling import Scaling

Path_dr = path_type("dr")  # a readable folder: jsonargparse resolves it against the config file
SPLITS = ("train", "val", "test")
SUFFIXES = {"parquet": (".parquet", ".pq"), "csv": (".csv", ".csv.gz")}
# arrays() hands a whole split to callers that need one (figures, the in-memory report) up to this
# size; past it they must stream (train_chunks) instead.
MAX_MATERIALIZED_ROWS = 1_000_000
# Lightning batches a training process reads ahead of its training step (in a thread, when it has
# no DataLoader workers), and how often a waiting reader checks whether training stopped.
READ_AHEAD = 2
READ_AHEAD_CHUNKS = 4
READ_AHEAD_POLL_S = 0.1


@dataclass(frozen=True)
class Fragment:
    """One unit of reading: a Parquet row group (``row_group`` set) or a whole CSV file."""

    path: str
    key: str  # the path relative to the data folder: what the split hash sees
    row_group: int | None
    start: int  # position of its first row within the file


class StreamingSource(DataSource):
    """A source read in chunks: ``RegressionDataModule`` streams it instead of calling ``load()``.

    Subclasses list their ``fragments()`` and ``read()`` them; ``columns`` (the feature columns as
    read), ``target_names`` and ``weight`` (the weight column, or None) are known once
    constructed. Categorical ``columns`` are read as levels (``read_levels``) in a first pass,
    which sets ``encoding``; ``feature_names`` are then the model's columns.
    """

    standardize_by_default = True
    name: str
    columns: list[str]
    target_names: list[str]
    weight: str | None = None
    categorical: list[str] = []
    max_levels: int = 1000
    encoding: Encoding | None = None
    num_workers: int = 0
    chunk_rows: int = 65536
    shuffle_rows: int = 262144

    @property
    def feature_names(self) -> list[str]:
        return self.encoding.feature_names if self.encoding is not None else list(self.columns)

    def fragments(self) -> list[Fragment]:
        raise NotImplementedError

    def read(self, fragment: Fragment, dtype: type = np.float32) -> Iterator[np.ndarray]:
        """The fragment's rows in order, as column-major chunks (d + t, m), or (d + t + 1, m) with
        a weight column: the model's feature columns (categorical ones coded by ``encoding``),
        the targets, then the weights. (Column-major because that is how files store them:
        filling a row-major array column by column costs ten times more.)"""
        raise NotImplementedError

    def read_levels(self, fragment: Fragment) -> Iterator[dict[str, np.ndarray]]:
        """The fragment's values of the ``categorical`` columns, in chunks, by column name."""
        raise NotImplementedError

    def load(self) -> Table:
        raise InputError(f"{type(self).__name__} streams its rows; use it through RegressionDataModule.")


class ParquetSource(StreamingSource):
    """A folder, glob or file of Parquet files (or CSV, or gzip CSV), streamed in column chunks.

    Parameters
    ----------
    path : str
        A folder (searched recursively for files of the format; names starting with ``.`` or
        ``_`` are skipped), a glob (``data/part-*.parquet``) or one file. A relative folder or file
        in a config file is resolved against that file's folder, a glob against the working
        directory.
    target : str or list of str
        The target column name(s).
    features : list of str, optional
        Feature columns; default: every column of the first file that is not a target or the
        weight.
    categorical : list of str, optional
        Numeric feature columns to treat as categorical too; columns of another type (text,
        dictionary) always are (treatment coding, as ``CSVSource``). Their levels are those of the
        training rows, collected in a first pass over these columns alone.
    max_levels : int
        The most levels a categorical column may have: the pass stops with an error beyond it.
    unseen_levels : {"error", "reference"}
        A validation or test row whose level the training rows lack: an error, or the reference.
    weight : str, optional
        A column of row weights (finite, >= 0): weighted least squares, as ``CSVSource``.
    format : {"parquet", "csv"}, optional
        The file format; default: from the file names (``.parquet``/``.pq``, ``.csv``/``.csv.gz``).
        CSV files need a header row; gzip is recognised by the ``.gz`` suffix.
    chunk_rows : int
        Rows per read: bounds the memory of a read and is the evaluation batch.
    shuffle_rows : int
        Rows whose order is mixed together when shuffling (whole batches; at least one batch).
    num_workers : int
        DataLoader worker processes per training process that read ahead. With 0, a thread of
        the training process reads ``READ_AHEAD`` batches ahead (the fastest on few cores: a
        worker's batches cross into the training process through shared memory).
    """

    def __init__(
        self,
        path: Path_fr | Path_dr | str,
        target: str | list[str],
        features: list[str] | None = None,
        categorical: list[str] | None = None,
        max_levels: int = 1000,
        unseen_levels: UnseenLevels = "error",
        weight: str | None = None,
        format: Literal["parquet", "csv"] | None = None,
        chunk_rows: int = 65536,
        shuffle_rows: int = 262144,
        num_workers: int = 0,
    ) -> None:
        import pyarrow as pa
        import pyarrow.dataset as ds

        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        targets = [target] if isinstance(target, str) else list(target)
        if not targets:
            raise InputError("data.source.target=[] is empty: name at least one target column.")
        for name, value in (("chunk_rows", chunk_rows), ("shuffle_rows", shuffle_rows)):
            if value < 1:
                raise InputError(f"data.source.{name}={value} must be a positive integer.")
        if num_workers < 0:
            raise InputError(f"data.source.num_workers={num_workers} must be >= 0.")
        self.chunk_rows, self.shuffle_rows, self.num_workers = chunk_rows, shuffle_rows, num_workers
        self.files, self.root, self.format = _find_files(self.path, format)
        self.name = Path(self.root).name or "files"
        if max_levels < 2:
            raise InputError(f"data.source.max_levels={max_levels} must be >= 2.")
        if unseen_levels not in ("error", "reference"):
            raise InputError(f"data.source.unseen_levels={unseen_levels!r} must be 'error' or 'reference'.")
        self.max_levels, self.unseen_levels, self.weight = max_levels, unseen_levels, weight
        types = self._types(self.files[0])
        if weight is not None and weight not in types:
            raise InputError(unknown_column_message(weight, list(types), self.files[0]))
        if features is None:
            features = [c for c in types if c not in targets and c != weight]
        if overlap := sorted(set(features) & set(targets)):
            raise InputError(f"columns {overlap} are given both as features and as target; list each once.")
        if weight in features + targets:
            raise InputError(
                f"data.source.weight={weight!r} is also a feature or target column; a column has one role."
            )
        if not features:
            raise InputError(f"'{self.files[0]}' has no feature column besides the target {targets}.")
        if unknown := [name for name in categorical or [] if name not in features]:
            raise InputError(f"data.source.categorical={unknown} names column(s) that are not features ({features}).")
        self.columns, self.target_names = list(features), targets
        self.categorical = [
            name for name in features if name in (categorical or []) or (name in types and not _is_number(types[name]))
        ]
        if self.format == "csv":
            from pyarrow import csv

            # Every numeric column read as float64: type inference on the first block would turn a
            # column of integers that later holds 1.5 into a conversion error.
            used = {name: "float64" for name in self.columns + self.target_names + ([weight] if weight else [])}
            used.update({name: pa.string() for name in self.categorical})
            self.file_format = ds.CsvFileFormat(convert_options=csv.ConvertOptions(column_types=used))
        else:
            self.file_format = ds.ParquetFileFormat()

    def config(self) -> dict:
        config = super().config()
        config["init_args"]["path"] = self.path
        return config

    def fragments(self) -> list[Fragment]:
        fragments = []
        for path in self.files:
            key = Path(os.path.relpath(path, self.root)).as_posix()
            self._check_columns(path)
            if self.format == "csv":
                fragments.append(Fragment(path, key, None, 0))
                continue
            metadata = self._parquet_metadata(path)
            start = 0
            for group in range(metadata.num_row_groups):
                fragments.append(Fragment(path, key, group, start))
                start += metadata.row_group(group).num_rows
        return fragments

    def read(self, fragment: Fragment, dtype: type = np.float32) -> Iterator[np.ndarray]:
        columns = self.columns + self.target_names + ([self.weight] if self.weight else [])
        where = f"'{fragment.path}'"
        for batch in self._batches(fragment, columns):
            if self.encoding is None:  # numbers only: filled in place
                matrix = np.empty((len(columns), batch.num_rows), dtype=dtype)
                for j, column in enumerate(batch.columns):
                    matrix[j] = column.to_numpy()
                yield matrix
                continue
            blocks = [
                self.encoding.dummies(name, column.to_numpy(zero_copy_only=False), self.unseen_levels, where).T
                if name in self.encoding.levels
                else column.to_numpy()[None, :]
                for name, column in zip(columns, batch.columns, strict=True)
            ]
            yield np.vstack(blocks).astype(dtype, copy=False)

    def read_levels(self, fragment: Fragment) -> Iterator[dict[str, np.ndarray]]:
        for batch in self._batches(fragment, self.categorical):
            yield {
                name: column.to_numpy(zero_copy_only=False)
                for name, column in zip(self.categorical, batch.columns, strict=True)
            }

    def _batches(self, fragment: Fragment, columns: list[str]):
        """The fragment's record batches of ``columns``, refusing missing values."""
        import pyarrow as pa

        try:
            filesystem = pa.fs.LocalFileSystem()
            if fragment.row_group is None:
                arrow_fragment = self.file_format.make_fragment(fragment.path, filesystem=filesystem)
            else:
                arrow_fragment = self.file_format.make_fragment(
                    fragment.path, filesystem=filesystem, row_groups=[fragment.row_group]
                )
            for batch in arrow_fragment.to_batches(columns=columns, batch_size=self.chunk_rows):
                for name, column in zip(columns, batch.columns, strict=True):
                    if column.null_count:
                        raise InputError(
                            f"column '{name}' in '{fragment.path}' has {column.null_count} missing "
                            "value(s); fill them in or drop those rows."
                        )
                yield batch
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as error:
            raise InputError(f"'{fragment.path}' could not be read as {self.format}: {error}") from None

    def _types(self, path: str) -> dict:
        """The file's column names and types (a CSV file's as inferred from its first block)."""
        if self.format == "parquet":
            schema = self._parquet_metadata(path).schema.to_arrow_schema()
        else:
            import pyarrow as pa
            import pyarrow.dataset as ds

            try:
                schema = ds.CsvFileFormat().make_fragment(path, filesystem=pa.fs.LocalFileSystem()).physical_schema
            except (pa.ArrowInvalid, OSError) as error:
                raise InputError(f"'{path}' could not be read as csv (it needs a header row): {error}") from None
        return dict(zip(schema.names, schema.types, strict=True))

    def _check_columns(self, path: str) -> None:
        """Every used column present in the file, and numeric unless categorical (CSV columns are
        checked as read)."""
        types = self._types(path)
        numeric = [c for c in self.columns if c not in self.categorical] + self.target_names
        for name in self.columns + self.target_names + ([self.weight] if self.weight else []):
            if name not in types:
                raise InputError(unknown_column_message(name, list(types), path))
        if self.format == "csv":
            return
        for name in numeric + ([self.weight] if self.weight else []):
            if not _is_number(types[name]):
                raise InputError(
                    f"column '{name}' in '{path}' has type {types[name]}, not a number; convert it to numbers"
                    + (", or list it in --data.source.categorical." if name in self.columns else ".")
                )

    @staticmethod
    def _parquet_metadata(path: str):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata
        except (pa.ArrowInvalid, OSError) as error:
            raise InputError(f"'{path}' could not be read as parquet (empty or truncated?): {error}") from None


class StreamedSplits:
    """The first pass over a streaming source, and the streams of its splits.

    Parameters
    ----------
    source : StreamingSource
        The files.
    seed : int
        Seed of the split hash and of the per-epoch shuffle.
    val_fraction, test_fraction : float
        Expected shares of the validation and test rows (see the module docstring).
    encoding : dict, optional
        The coding of the source's categorical columns (a trained model's); default: the levels
        of the training rows, from a pass over those columns alone before the first pass.

    Attributes
    ----------
    sizes : dict
        Rows per split.
    train_moments : Moments
        Count, means and centred cross-products of the training rows [x, y], float64.
    """

    def __init__(
        self,
        source: StreamingSource,
        seed: int,
        val_fraction: float,
        test_fraction: float,
        encoding: dict | None = None,
    ) -> None:
        self.source, self.seed = source, seed
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.fragments = source.fragments()
        self.weighted = source.weight is not None
        if source.categorical or encoding:
            source.encoding = Encoding.from_config(encoding) if encoding else self._training_levels()
        d, t = len(source.feature_names), len(source.target_names)
        self.counts = np.zeros((len(self.fragments), len(SPLITS)), dtype=np.int64)
        moments = Moments.empty(d, t)
        for i, fragment in enumerate(self.fragments):
            position = fragment.start
            for columns in source.read(fragment, np.float64):
                _check_finite(columns, source, fragment, position)
                codes = self.split_codes(fragment, position, columns.shape[1])
                self.counts[i] += np.bincount(codes, minlength=len(SPLITS))
                train = np.take(columns, np.flatnonzero(codes == 0), axis=1)
                if self.weighted:
                    moments = moments.merge(Moments.of_rows(d, train[:-1].T, train[-1]))
                else:
                    moments = moments.merge(_moments(train, d))
                position += columns.shape[1]
        self.train_moments = moments
        self.sizes = {split: int(self.counts[:, code].sum()) for code, split in enumerate(SPLITS)}
        if self.sizes["train"] == 0:
            raise InputError(
                f"the files of '{source.name}' hold no training row; check them and the val/test fractions."
            )
        if not moments.weight_sum > 0:
            raise InputError(
                f"the training rows' weights (column '{source.weight}') sum to 0; give some a positive weight."
            )
        for split, fraction in (("val", val_fraction), ("test", test_fraction)):
            if fraction > 0 and self.sizes[split] == 0:
                raise InputError(
                    f"data.{split}_fraction={fraction} drew no row out of {sum(self.sizes.values())}; raise it "
                    "or set it to 0."
                )

    def _training_levels(self) -> Encoding:
        """The levels of the categorical columns in the training rows, from their values alone."""
        source = self.source
        found: dict[str, set] = {name: set() for name in source.categorical}
        for fragment in self.fragments:
            position = fragment.start
            for values in source.read_levels(fragment):
                rows = len(next(iter(values.values())))
                train = self.split_codes(fragment, position, rows) == 0
                position += rows
                for name, column in values.items():
                    found[name].update(np.unique(column[train]).tolist())
                    check_level_count(name, len(found[name]), source.max_levels, fragment.path)
        return Encoding(list(source.columns), {name: sorted(levels) for name, levels in found.items()})

    def split_codes(self, fragment: Fragment, start: int, rows: int) -> np.ndarray:
        """0 (train), 1 (val) or 2 (test) for the rows ``start, ..., start + rows - 1`` of a file."""
        u = row_hash(self.seed, fragment.key, np.arange(start, start + rows, dtype=np.uint64))
        codes = np.zeros(rows, dtype=np.int64)
        codes[u < self.test_fraction + self.val_fraction] = 1
        codes[u < self.test_fraction] = 2
        return codes

    def table(self) -> Table:
        """Names only: the rows stream (``x`` and ``y`` have no rows, their widths are d and t)."""
        d, t = len(self.source.feature_names), len(self.source.target_names)
        return Table(
            self.source.name, np.empty((0, d)), np.empty((0, t)), self.source.feature_names, self.source.target_names
        )

    def scaling(self, features: bool, target: bool) -> Scaling:
        """The standardization of the training rows, from the first pass's moments."""
        moments, d = self.train_moments, len(self.source.feature_names)
        identity = Scaling.identity(d, len(self.source.target_names))
        std = np.sqrt(np.diag(moments.comoment) / moments.weight_sum)
        for wanted, names, scale, option in (
            (features, self.source.feature_names, std[:d], "standardize_features"),
            (target, self.source.target_names, std[d:], "standardize_target"),
        ):
            if wanted and (constant := [n for n, s in zip(names, scale, strict=True) if not s > 0]):
                raise InputError(
                    f"column(s) {constant} are constant on the training split and cannot be standardized; "
                    f"drop them or set data.{option}=false."
                )
        return Scaling(
            moments.mean[:d] if features else identity.feature_mean,
            std[:d] if features else identity.feature_scale,
            moments.mean[d:] if target else identity.target_mean,
            std[d:] if target else identity.target_scale,
        )

    def order(self, epoch: int, shuffle: bool) -> np.ndarray:
        """The fragments' order in an epoch."""
        if not shuffle:
            return np.arange(len(self.fragments))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.fragments))

    def rows(
        self, split: str, order: np.ndarray, start: int, stop: int, dtype: type = np.float32
    ) -> Iterator[np.ndarray]:
        """Rows ``start .. stop - 1`` of a split, counted along the fragments in ``order``, as
        column-major chunks (d + t, m).

        Only the fragments holding those rows are read.
        """
        code = SPLITS.index(split)
        counts = self.counts[order, code]
        ends = np.cumsum(counts)
        for j in range(int(np.searchsorted(ends, start, side="right")), len(order)):
            begin = int(ends[j] - counts[j])
            if begin >= stop:
                return
            if counts[j] == 0:
                continue
            fragment, seen, position = self.fragments[order[j]], begin, self.fragments[order[j]].start
            for columns in self.source.read(fragment, dtype):
                keep = np.flatnonzero(self.split_codes(fragment, position, columns.shape[1]) == code)
                position += columns.shape[1]
                lo, hi = max(start - seen, 0), min(stop - seen, len(keep))
                seen += len(keep)
                if lo < hi:
                    yield columns if hi - lo == columns.shape[1] else np.take(columns, keep[lo:hi], axis=1)
                if seen >= stop:
                    return

    def chunks(
        self, split: str, rank: int, world_size: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """This process's share of a split in float64, original units, file order: x, y and the
        rows' weights (None when unweighted)."""
        share = rank_share(self.sizes[split], rank, world_size)
        d, t = len(self.source.feature_names), len(self.source.target_names)
        for columns in self.rows(split, self.order(0, False), share.start, share.stop, np.float64):
            yield columns[:d].T, columns[d : d + t].T, columns[d + t] if self.weighted else None

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """A whole split in float64, for callers that need one; at most ``MAX_MATERIALIZED_ROWS``."""
        pieces = self._materialized(split)
        d, t = len(self.source.feature_names), len(self.source.target_names)
        if not pieces:
            return np.empty((0, d)), np.empty((0, t))
        return np.concatenate([x for x, _, _ in pieces]), np.concatenate([y for _, y, _ in pieces])

    def weights(self, split: str) -> np.ndarray | None:
        """The row weights of a split, aligned with ``arrays``; None when unweighted."""
        if not self.weighted:
            return None
        return np.concatenate([w for _, _, w in self._materialized(split)] or [np.empty(0)])

    def _materialized(self, split: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        if self.sizes[split] > MAX_MATERIALIZED_ROWS:
            raise InputError(
                f"the {split} split has {self.sizes[split]} rows, more than the {MAX_MATERIALIZED_ROWS} that "
                "are ever loaded into memory at once from streamed files; stream it with train_chunks()."
            )
        return list(self.chunks(split, 0, 1))

    def loader(
        self,
        split: str,
        batch_size: int | None,
        rank: int,
        world_size: int,
        train: bool,
        shuffle: bool = False,
        epoch: Callable[[], int] = lambda: 0,
        steps_per_batch: int = 1,
    ) -> DataLoader:
        """The DataLoader of one process's share of a split.

        Training batches have ``batch_size`` rows (None: the whole share) and the same count on
        every process; evaluation batches are ``chunk_rows`` long (the metrics do not depend on it).
        """
        plan = BatchPlan(
            self,
            split,
            batch_size if train else self.source.chunk_rows,
            rank,
            world_size,
            equal_steps=train,
            shuffle=shuffle and train,
            steps_per_batch=steps_per_batch if train else 1,
        )
        if not train:  # a plain DataLoader, which Lightning may rebuild (it does for predict)
            return DataLoader(plan, batch_size=None, num_workers=self.source.num_workers)
        return EpochLoader(plan, epoch, self.source.num_workers)


class BatchPlan(IterableDataset):
    """One process's batches of a split in one epoch (the ``epoch`` attribute, set by its loader).

    Yields ``(x, y)`` float32 tensors, or a list of ``steps_per_batch`` of them for the fast path.
    """

    def __init__(
        self,
        splits: StreamedSplits,
        split: str,
        batch_size: int | None,
        rank: int,
        world_size: int,
        equal_steps: bool,
        shuffle: bool,
        steps_per_batch: int = 1,
    ) -> None:
        self.splits, self.split, self.shuffle, self.steps_per_batch = splits, split, shuffle, steps_per_batch
        n = splits.sizes[split]
        self.bounds = np.array(batch_bounds(n, rank, world_size, batch_size, equal_steps))
        self.batch_size = batch_size or max(n // world_size, 1)  # sizes the shuffle windows
        self.steps = len(self.bounds) - 1
        self.n_features, self.n_targets = len(splits.source.feature_names), len(splits.source.target_names)
        self.epoch = 0

    def __len__(self) -> int:
        return -(-self.steps // self.steps_per_batch)

    def __iter__(self) -> Iterator:
        if get_worker_info() is not None:  # a DataLoader worker process already reads ahead
            return self._batches()
        return read_ahead(self._batches(), READ_AHEAD)

    def _batches(self) -> Iterator:
        bounds = self.bounds
        batches = len(self)
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker is not None else (1, 0)
        # A contiguous block of Lightning batches per worker: each reads only its own fragments.
        first, last = batches * worker_id // workers, batches * (worker_id + 1) // workers
        first_step, last_step = first * self.steps_per_batch, min(last * self.steps_per_batch, self.steps)
        if first_step >= last_step:
            return
        order = self.splits.order(self.epoch, self.shuffle)
        chunks = self.splits.rows(self.split, order, int(bounds[first_step]), int(bounds[last_step]))
        # A second thread decodes and filters the next chunks while this one shuffles and cuts batches.
        reader = RowReader(read_ahead(chunks, READ_AHEAD_CHUNKS) if get_worker_info() is None else chunks)
        per_window = max(1, self.splits.source.shuffle_rows // (self.batch_size * self.steps_per_batch))
        for window in range(first, last, per_window):
            window_end = min(window + per_window, last)
            edges = bounds[window * self.steps_per_batch : min(window_end * self.steps_per_batch, self.steps) + 1]
            rows = int(edges[-1] - edges[0])
            order = None
            if self.shuffle:
                order = np.random.default_rng([self.splits.seed, self.epoch, int(edges[0])]).permutation(rows)
            window = reader.take(rows, order)
            cuts = edges - edges[0]
            minibatches = [self._batch(window[:, a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
            for k in range(0, len(minibatches), self.steps_per_batch):
                yield minibatches[k] if self.steps_per_batch == 1 else minibatches[k : k + self.steps_per_batch]

    def _batch(self, columns: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        # Row-major batches: the model's step on transposed views is four times slower, and torch
        # transposes a batch-sized block in cache (0.6 ms per 4096 x 51) three times faster than numpy.
        # A copy, never a view: one target's (1, m) row transposed already counts as contiguous, and
        # a view would keep (and send to the main process) the whole read window with every batch.
        block = torch.from_numpy(columns)
        parts = block.split([self.n_features, self.n_targets] + ([1] if self.splits.weighted else []))
        batch = tuple(part.T.clone(memory_format=torch.contiguous_format) for part in parts)
        return batch if not self.splits.weighted else (batch[0], batch[1], batch[2][:, 0])


class RowReader:
    """Takes rows in exact counts from a stream of column-major (k, m) chunks of any length.

    The windows it returns live in two buffers it reuses, so each is valid until the next
    ``take``: a fresh 50 MB array per window costs as much in page faults as the copy itself.
    """

    def __init__(self, chunks: Iterator[np.ndarray]) -> None:
        self.chunks, self.rest = chunks, None
        self.buffers: dict[str, np.ndarray] = {}

    def take(self, n: int, order: np.ndarray | None = None) -> np.ndarray:
        """The next ``n`` rows as (k, n); with ``order`` (a permutation of n), column i holds the
        ``order[i]``-th of them."""
        pieces, have = [], 0
        while have < n:
            piece = self.rest if self.rest is not None else next(self.chunks)
            self.rest = None
            if piece.shape[1] > n - have:
                self.rest, piece = piece[:, n - have :], piece[:, : n - have]
            pieces.append(piece)
            have += piece.shape[1]
        window = pieces[0]
        if len(pieces) > 1:
            window = np.concatenate(pieces, axis=1, out=self._buffer("window", window.shape[0], n, window.dtype))
        if order is None:
            return window
        # np.take gathers along an axis five times faster than fancy indexing or scattering; every
        # index of a permutation is valid, and mode="wrap" lets it write straight into ``out``.
        return np.take(
            window, order, axis=1, out=self._buffer("shuffled", window.shape[0], n, window.dtype), mode="wrap"
        )

    def _buffer(self, name: str, rows: int, columns: int, dtype: np.dtype) -> np.ndarray:
        buffer = self.buffers.get(name)
        if buffer is None or buffer.shape != (rows, columns) or buffer.dtype != dtype:
            buffer = self.buffers[name] = np.empty((rows, columns), dtype)
        return buffer


class EpochLoader(DataLoader):
    """A DataLoader (``batch_size=None``: the dataset yields whole batches) that tells its
    dataset the epoch before each pass; worker processes copy the dataset at that moment.

    Lightning only sets the epoch of a sampler, and an IterableDataset has none; it does not
    replace this loader under DDP either (it never adds a DistributedSampler to an IterableDataset).
    """

    def __init__(self, dataset: BatchPlan, epoch: Callable[[], int], num_workers: int = 0) -> None:
        super().__init__(dataset, batch_size=None, num_workers=num_workers)
        self.epoch = epoch

    def __iter__(self):
        self.dataset.epoch = self.epoch()
        return super().__iter__()


def read_ahead(items: Iterator, depth: int) -> Iterator:
    """``items``, produced by a background thread up to ``depth`` ahead of the consumer.

    Reading overlaps training in the same process: pyarrow's decoding and the numpy and torch
    copies that cut batches release the GIL, as does the training step. An error in the reader is
    raised in the consumer; a consumer that stops early (``max_steps``, an interrupt) stops the
    reader within ``READ_AHEAD_POLL_S``.
    """
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                queue.put(item, timeout=READ_AHEAD_POLL_S)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(end)
        except BaseException as error:  # handed to the consumer, which raises it
            put(error)

    threading.Thread(target=produce, name="linreg_pl-read-ahead", daemon=True).start()
    try:
        while (item := queue.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def row_hash(seed: int, key: str, positions: np.ndarray) -> np.ndarray:
    """Uniform numbers in [0, 1) from (seed, file key, row position): SplitMix64's finalizer.

    Examples
    --------
    >>> u = row_hash(0, "part-0.parquet", np.arange(100_000, dtype=np.uint64))
    >>> same, other_seed = (row_hash(seed, "part-0.parquet", np.arange(3, dtype=np.uint64)) for seed in (0, 1))
    >>> bool(0.49 < u.mean() < 0.51), bool((same == u[:3]).all()), bool((other_seed != u[:3]).all())
    (True, True, True)
    """
    salt = int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest(), "little")
    z = positions.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(salt)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _find_files(path: str, format: str | None) -> tuple[list[str], str, str]:
    """The data files (sorted), the folder their keys are relative to, and their format."""
    if format is not None and format not in SUFFIXES:
        raise InputError(f"data.source.format={format!r} must be 'parquet' or 'csv'.")
    wanted = SUFFIXES[format] if format else sum(SUFFIXES.values(), ())
    if glob.has_magic(path):
        files = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        # The folder above the first wildcard: adding files keeps the other files' keys.
        root = os.path.dirname(path[: min(path.index(c) for c in "*?[" if c in path)])
    elif os.path.isdir(path):
        files = sorted(
            str(p)
            for p in Path(path).rglob("*")
            if p.is_file() and p.name.lower().endswith(wanted) and not p.name.startswith((".", "_"))
        )
        root = path
    elif os.path.isfile(path):
        files, root = [path], os.path.dirname(path)
    else:
        raise InputError(f"data.source.path='{path}' is neither a file, a folder nor a glob that exists.")
    if not files:
        raise InputError(f"data.source.path='{path}' holds no {' or '.join(wanted)} file.")
    if format is None:
        formats = {name for name, suffixes in SUFFIXES.items() for f in files if f.lower().endswith(suffixes)}
        if len(formats) != 1:
            raise InputError(
                f"data.source.path='{path}' holds files of format {sorted(formats) or 'unknown'}; "
                "pass --data.source.format parquet or csv."
            )
        format = formats.pop()
    return files, root, format


def _check_finite(columns: np.ndarray, source: StreamingSource, fragment: Fragment, start: int) -> None:
    """Finite numbers everywhere, and weights >= 0."""
    bad = ~np.isfinite(columns)
    if source.weight is not None:
        bad[-1] |= columns[-1] < 0
    if bad.any():
        column, row = np.argwhere(bad)[0]
        name = (source.feature_names + source.target_names + [source.weight])[column]
        allowed = "row weights must be finite numbers >= 0" if name == source.weight else "give finite numbers"
        raise InputError(
            f"column '{name}' in '{fragment.path}' holds {columns[column, row]:g} on data row {start + row + 1}; "
            f"{allowed}."
        )


def _is_number(arrow_type) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)


def _moments(columns: np.ndarray, n_features: int) -> Moments:
    """The moments of a column-major chunk (d + t, m), in float64 (what ``Moments.of`` computes
    from rows, without transposing)."""
    if columns.shape[1] == 0:
        return Moments.empty(n_features, columns.shape[0] - n_features)
    mean = columns.mean(axis=1)
    centred = columns - mean[:, None]
    return Moments(n_features, columns.shape[1], mean, centred @ centred.T)


def write_linear_dataset(
    out: str | os.PathLike,
    rows: int,
    features: int,
    rows_per_file: int = 1_000_000,
    row_group_size: int = 100_000,
    noise: float = 0.1,
    seed: int = 0,
    format: Literal["parquet", "csv", "csv.gz"] = "parquet",
    overwrite: bool = False,
) -> dict:
    """Write ``rows`` rows of y = x @ w + b + noise as float32 files ``part-00000.<format>``, ... in
    ``out``, one row group at a time (bounded memory), and ``truth.json`` with w and b.

    ``out`` must be new or empty: another data set's part files left beside these would be read
    with them. ``overwrite`` replaces a folder that holds files, whole, once the new set is complete.

    Columns ``x0 .. x{features-1}`` are N(0, 1), w is drawn from N(0, 1) and b = 1. Returns the
    contents of ``truth.json``.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> truth = write_linear_dataset(folder, rows=250, features=3, rows_per_file=100, row_group_size=40)
    >>> sorted(p.name for p in Path(folder).iterdir()), len(truth["weight"][0])
    (['part-00000.parquet', 'part-00001.parquet', 'part-00002.parquet', 'truth.json'], 3)
    """
    import json

    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    from linreg_pl.runtime.files import atomic_open, write_text_atomically

    for name, value in (("rows", rows), ("features", features), ("rows_per_file", rows_per_file)):
        if value < 1:
            raise InputError(f"{name}={value} must be a positive integer.")
    if row_group_size < 1:
        raise InputError(f"row_group_size={row_group_size} must be a positive integer.")
    if not noise >= 0:
        raise InputError(f"noise={noise} must be >= 0 (it is a standard deviation).")
    if format not in ("parquet", "csv", "csv.gz"):
        raise InputError(f"format={format!r} must be 'parquet', 'csv' or 'csv.gz'.")
    target = Path(out)
    if target.exists() and not target.is_dir():
        raise InputError(f"--out '{target}' is a file; give a folder.")
    replaces = target.is_dir() and any(target.iterdir())
    if replaces and not overwrite:
        raise InputError(
            f"--out '{target}' already holds files; its part files would be mixed with the new ones: choose a new "
            "or empty folder, or pass --overwrite to replace it whole."
        )
    # A replacement is written beside the old folder and swapped in only once complete.
    out = target.with_name(f".{target.name}.{os.getpid()}.partial") if replaces else target
    rng = np.random.default_rng(seed)
    weight, bias = rng.standard_normal(features), 1.0
    names = [f"x{j}" for j in range(features)] + ["y"]
    for part, first in enumerate(range(0, rows, rows_per_file)):
        path = out / f"part-{part:05d}.{format}"
        with atomic_open(path) as file:
            sink = pa.CompressedOutputStream(file, "gzip") if format == "csv.gz" else file
            writer = None
            end = min(first + rows_per_file, rows)
            for start in range(first, end, row_group_size):
                # Each block has its own generator (seeded by its first row): memory holds one block.
                size = min(row_group_size, end - start)
                block = np.random.default_rng([seed, start]).standard_normal((size, features + 1))
                x = block[:, :features]
                y = x @ weight + bias + noise * block[:, features]
                table = pa.Table.from_arrays([pa.array(c, pa.float32()) for c in (*x.T, y)], names=names)
                if format == "parquet":
                    writer = writer or pq.ParquetWriter(sink, table.schema)
                    writer.write_table(table, row_group_size=row_group_size)
                else:
                    options = pa_csv.WriteOptions(include_header=writer is None)
                    pa_csv.write_csv(table, sink, write_options=options)
                    writer = True
            if format == "parquet":
                writer.close()
            elif format == "csv.gz":
                sink.close()
    truth = {
        "weight": [weight.tolist()],
        "bias": [bias],
        "rows": rows,
        "features": features,
        "noise": noise,
        "seed": seed,
    }
    write_text_atomically(out / "truth.json", json.dumps(truth, indent=2) + "\n")
    if replaces:
        shutil.rmtree(target)
        out.rename(target)
    return truth
