"""The order in which one data shard reads the records, epoch after epoch.

Every epoch is a fresh seeded permutation of all records (the same on every process); shard s
of S takes the permutation's positions s, s+S, s+2S, ... So in every epoch the shards are
disjoint and together cover every record once, and epoch e+1 is ordered differently from
epoch e. The order is computed here, not by chaining Grain's shuffle/slice/repeat, so it does
not depend on how a Grain version carries the epoch through a slice. It equals Grain 0.2.18's
``MapDataset.range(n).shuffle(seed)[s::S].repeat()`` (same per-epoch seeds), so iterator
states saved before this module existed resume on the same records.
"""
from __future__ import annotations

import sys


class EpochOrder:
    """Random access: position i of shard ``shard`` of ``shards`` -> record index.

    A Grain random-access source (``grain.MapDataset.source(order)``); ``num_epochs=None``
    repeats forever (length sys.maxsize, as Grain's own repeat).
    """

    def __init__(self, num_records: int, *, seed: int, shuffle: bool, shard: int, shards: int,
                 num_epochs: int | None):
        if not 0 <= shard < shards:
            raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
        if not 0 <= seed < 2**32:
            raise ValueError(f"data.seed must be in 0..2**32-1, got {seed}")
        self.num_records, self.seed, self.shuffle = num_records, seed, shuffle
        self.shard, self.shards = shard, shards
        self.per_epoch = len(range(shard, num_records, shards))
        if self.per_epoch == 0:
            self.length = 0
        else:
            self.length = sys.maxsize if num_epochs is None else num_epochs * self.per_epoch

    def __len__(self) -> int:
        return self.length

    def epoch_and_position(self, i: int) -> tuple[int, int]:
        """The epoch of local position i and the record's position in that epoch's permutation."""
        epoch, k = divmod(i, self.per_epoch)
        return epoch, self.shard + k * self.shards

    def __getitem__(self, i: int) -> int:
        if not 0 <= i < self.length:
            raise IndexError(f"position {i} is outside the shard's {self.length} positions")
        epoch, position = self.epoch_and_position(i)
        return self.record(epoch, position)

    def record(self, epoch: int, position: int) -> int:
        if not self.shuffle or self.num_records == 1:
            return position
        from grain.experimental import index_shuffle

        return int(index_shuffle(position, max_index=self.num_records - 1, seed=(self.seed + epoch) % 2**32,
                                 rounds=4))
