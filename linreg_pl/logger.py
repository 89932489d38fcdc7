"""TensorBoardLogger: Lightning's, with the scalars written in the training thread, one event per
``log_metrics`` call, into an event file of their own.

Lightning's logger turns every value into an event of its own and hands each to TensorBoard's
writer thread. On two cores the thread's wake-ups slow training down: on d2l one event every 10
steps costs ~0.1 ms a step, four of them a third of the step. Here the values of a call are one
event, framed and checksummed as TensorBoard writes them (TFRecord, CRC-32C) and appended to a
buffered file, ~25 µs. TensorBoard reads every event file of a run: the curves look the same.
Images, histograms and the HPARAMS tab still go through ``logger.experiment``.
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import time
from collections.abc import Mapping
from time import monotonic

import google_crc32c
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer import record_writer
from tensorboard.summary.writer.record_writer import RecordWriter

# The scalars reach the disk at least this often (a live TensorBoard shows them), and at the end.
FLUSH_SECONDS = 1.0
_FILE_NUMBERS = itertools.count()  # two loggers of one process never share a file


class TensorBoardLogger(LightningTensorBoardLogger):
    """``lightning.pytorch.loggers.TensorBoardLogger`` (same arguments, same run directories),
    whose ``log_metrics`` writes the values it is given as one event, at once, into
    ``events.out.tfevents.<time>.<host>.<pid>.<n>.scalars`` in ``log_dir``. A dict value (one chart
    of several series) goes through Lightning's ``log_metrics`` as before.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._scalars: RecordWriter | None = None
        self._scalars_path: str | None = None
        self._flushed_at = self._saved_at = 0.0

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        values, charts = [], {}
        for tag, value in metrics.items():
            if isinstance(value, Mapping):
                charts[tag] = value
                continue
            name = f"{self._prefix}{self.LOGGER_JOIN_CHAR}{tag}" if self._prefix else tag
            values.append(Summary.Value(tag=name, simple_value=float(value)))  # a 0-d tensor too
        if charts:
            super().log_metrics(charts, step)
        if values:
            event = Event(wall_time=time.time(), step=step or 0, summary=Summary(value=values))
            self._append(event.SerializeToString())
            if monotonic() - self._flushed_at >= FLUSH_SECONDS:
                self._scalars.flush()
                self._flushed_at = monotonic()

    @rank_zero_only
    def save(self) -> None:
        # Lightning calls it after each of its logged steps, and it flushes TensorBoard's writer (a
        # wait for its thread): here at most every FLUSH_SECONDS, and at the end (finalize).
        if monotonic() - self._saved_at >= FLUSH_SECONDS:
            super().save()
            self._saved_at = monotonic()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._scalars is not None:
            self._scalars.close()  # a later fit or test of the same run appends to the same file
            self._scalars = None
        self._saved_at = -math.inf  # the save that Lightning's finalize makes is not skipped
        super().finalize(status)

    def __getstate__(self) -> dict:
        # A spawned process (ddp_spawn) opens its own file, if it is rank 0.
        return {**super().__getstate__(), "_scalars": None}

    def _append(self, record: bytes) -> None:
        if self._scalars is None:
            self._open()
        self._scalars.write(record)  # framed and checksummed (record_writer.masked_crc32c) as TensorBoard does

    def _open(self) -> None:
        new = self._scalars_path is None
        if new:
            os.makedirs(self.log_dir, exist_ok=True)
            name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
            self._scalars_path = os.path.join(self.log_dir, f"{name}.{next(_FILE_NUMBERS)}.scalars")
        self._scalars = RecordWriter(open(self._scalars_path, "ab"))  # noqa: SIM115 (closed in finalize)
        if new:
            self._append(Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())


def checksum_events_in_c() -> None:
    """Make TensorBoard's event writer checksum its records with google-crc32c's C code: its own
    CRC-32C is pure Python, ~0.3 ms a kilobyte, a tenth of a lesson's training time (the PNG
    images, mostly). The masked CRC is TFRecord's, so every reader checks the files as before.
    Where google-crc32c has no compiled build for the platform, TensorBoard's own stays."""
    if google_crc32c.implementation == "c":
        record_writer.masked_crc32c = _masked_crc32c


def _masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
