"""The batches of a training epoch: a permutation fixed by ``(seed, epoch)``, so that a run resumed
mid-epoch sees exactly the batches it would have seen, and that several processes together see
the single-process batches."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from detect import distributed


def batches_per_epoch(size: int, batch_size: int, world_size: int = 1) -> int:
    """Global batches in an epoch; with several processes a last batch smaller than their number
    is dropped (some process would have no image)."""
    full, rest = divmod(size, batch_size)
    return full + (1 if rest >= world_size else 0)


class EpochBatches(Sampler[list[int]]):
    """The batches of one epoch: a permutation of ``range(size)`` fixed by ``(seed, epoch)``, cut
    into global batches of ``batch_size``, from batch ``start`` on.

    With ``world_size`` processes, each global batch is split into contiguous shares
    (:func:`detect.distributed.share`) and this sampler yields share ``rank``: the union over
    ranks is the single-process batch, whatever the number of processes.
    """

    def __init__(self, size: int, batch_size: int, seed: int, epoch: int, start: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.size, self.batch_size, self.seed, self.epoch, self.start = size, batch_size, seed, epoch, start
        self.rank, self.world_size = rank, world_size

    def order(self) -> list[int]:
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]))
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order()
        for index in range(self.start, batches_per_epoch(self.size, self.batch_size, self.world_size)):
            batch = order[index * self.batch_size:(index + 1) * self.batch_size]
            yield distributed.share(batch, self.rank, self.world_size)

    def __len__(self) -> int:
        return batches_per_epoch(self.size, self.batch_size, self.world_size) - self.start
