"""How the rows of a split are dealt to processes and cut into batches: one rule for in-memory and
streamed data.

Process ``rank`` of ``world_size`` takes the contiguous range ``[n * rank // world_size,
n * (rank + 1) // world_size)`` of the split's rows, in the epoch's order: every row exactly once,
shares differing by at most one row. For training every process cuts its share into the same number
of batches, ``ceil((n // world_size) / batch_size)``, because DDP all-reduces the gradients at every
step and the processes' steps must pair up; a share one row larger puts that row in its last batch.
No padding, no dropped row, no hang.
"""

from __future__ import annotations

import numpy as np


def rank_share(n: int, rank: int, world_size: int) -> slice:
    """The rows of ``n`` that process ``rank`` of ``world_size`` takes.

    >>> [rank_share(5, r, 2) for r in range(2)]
    [slice(0, 2, None), slice(2, 5, None)]
    """
    return slice(n * rank // world_size, n * (rank + 1) // world_size)


def training_steps(n: int, world_size: int, batch_size: int | None) -> int:
    """Optimizer steps per epoch of every process training on ``n`` rows (``batch_size`` None:
    one, the whole share).

    >>> training_steps(800, 1, 10), training_steps(11, 2, 5), training_steps(11, 2, None)
    (80, 1, 1)
    """
    return -(-(n // world_size) // batch_size) if batch_size else 1


def batch_bounds(n: int, rank: int, world_size: int, batch_size: int | None, equal_steps: bool) -> list[int]:
    """Where each batch of process ``rank``'s share of ``n`` rows starts, then where the share ends;
    ``batch_size`` None: the whole share in one batch. ``equal_steps``: as many batches on every
    process (training under DDP).

    >>> [batch_bounds(11, rank, 2, 5, equal_steps=True) for rank in (0, 1)]
    [[0, 5], [5, 11]]
    >>> batch_bounds(11, 1, 2, 5, equal_steps=False), batch_bounds(11, 1, 2, None, equal_steps=True)
    ([5, 10, 11], [5, 11])
    """
    share = rank_share(n, rank, world_size)
    batch_size = batch_size or max(share.stop - share.start, 1)
    steps = training_steps(n, world_size, batch_size) if equal_steps else -(-(share.stop - share.start) // batch_size)
    bounds = share.start + batch_size * np.arange(steps + 1)
    bounds[-1] = share.stop
    return bounds.tolist()
