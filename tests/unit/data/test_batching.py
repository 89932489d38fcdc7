"""The one rule that deals a split's rows to processes and cuts them into batches (in-memory and
streamed data)."""

import pytest

from linreg_pl.data.batching import batch_bounds


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("batch_size", [None, 1, 3, 7])
@pytest.mark.parametrize("equal_steps", [True, False])
def test_every_row_once_and_equal_training_steps(world_size, batch_size, equal_steps):
    for n in range(world_size, 40):
        bounds = [batch_bounds(n, rank, world_size, batch_size, equal_steps) for rank in range(world_size)]
        rows = [row for b in bounds for start, stop in zip(b[:-1], b[1:], strict=True) for row in range(start, stop)]
        assert rows == list(range(n)), (n, bounds)  # every row exactly once, in order
        sizes = [stop - start for b in bounds for start, stop in zip(b[:-1], b[1:], strict=True)]
        assert all(sizes), (n, bounds)  # no empty batch
        if batch_size is not None:
            assert max(sizes) <= batch_size + 1  # at most the one extra row of a larger share
        if equal_steps:  # DDP: every process steps equally often
            assert len({len(b) for b in bounds}) == 1, (n, bounds)
