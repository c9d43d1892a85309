"""The Grain input pipeline: records -> epoch order per shard -> encode (once) -> pack -> batch -> global arrays.

    data = TrainData(DataConfig(train_files=[...], tokenizer=TOK, mask_file=MASK, seq_len=2048,
                                global_batch_size=32, seed=0))
    host_batch = next(data)                      # dict of numpy [B_local, T] (see sequences.py)
    batch = data.next_global(mesh)               # dict of global jax.Array [B_global, T], batch over data x fsdp
    state = data.get_state(); data.set_state(state)   # resume on the exact next batch

The data is cut into ``data.shards`` shards (default: one per process). Each epoch is a fresh
seeded permutation of all records, the same on every process; shard s takes every shards-th
record of it from position s (order.py), so the shards are disjoint and together cover each epoch.
Each shard packs and batches its records alone (global_batch_size / shards rows), and a process
reads shards [p*S/P, (p+1)*S/P) and stacks their rows. The global batch is therefore the same
for any process count that divides the shard count, and so is a resumed run: a checkpoint holds
every shard's iterator state, and any process count dividing the shard count can resume it.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, Sequence

import numpy as np
from etils import epath

from atlas_jax.data.encode import EncodeOptions, TrajectoryEncoder, load_tokenizer
from atlas_jax.data.mask import check_mask_against, read_mask
from atlas_jax.data.order import EpochOrder
from atlas_jax.data.sequences import BATCH_KEYS, PACKED_FEATURES
from atlas_jax.data.tfds_builder import decode_example, is_tfds_dir, open_array_record
from atlas_jax.data.trajectory import ReadReport, TrajectoryError, read_trajectories

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    train_files: Sequence[str]  # .jsonl/.json trajectory files, or one prepared TFDS ArrayRecord directory
    tokenizer: str  # Hugging Face tokenizer directory (its chat template is used)
    seq_len: int  # packed row length T
    global_batch_size: int  # rows over all processes
    mask_file: str | None = None
    seed: int = 0
    num_epochs: int | None = None  # None: repeat forever
    shuffle: bool = True
    encode: EncodeOptions = EncodeOptions()  # max_length defaults to seq_len
    num_packing_bins: int = 8
    on_error: str = "raise"  # bad records: raise, or skip and count
    split: str = "train"  # TFDS split
    worker_count: int = 0  # Grain worker processes per shard for encode + pack (0: in this process, with threads)
    read_ahead: int = 16  # records encoded ahead of the packer (bounds the memory of records in flight)
    shards: int | None = None  # data shards (None: one per process); a multiple of every process count to resume on

    def __post_init__(self):
        if isinstance(self.train_files, str):
            object.__setattr__(self, "train_files", (self.train_files,))
        if not self.train_files:
            raise ValueError("data.train_files is empty")
        if self.seq_len < 2:
            raise ValueError(f"data.seq_len must be at least 2, got {self.seq_len}")
        if self.global_batch_size < 1:
            raise ValueError(f"data.global_batch_size must be positive, got {self.global_batch_size}")
        if self.encode.max_length is not None and self.encode.max_length > self.seq_len:
            raise ValueError(f"data.encode.max_length={self.encode.max_length} exceeds data.seq_len={self.seq_len}")
        if self.read_ahead < 1:
            raise ValueError(f"data.read_ahead must be >= 1, got {self.read_ahead}")
        if self.worker_count < 0:
            raise ValueError(f"data.worker_count must be >= 0, got {self.worker_count}")
        if self.shards is not None and self.shards < 1:
            raise ValueError(f"data.shards must be positive or None, got {self.shards}")
        if self.num_epochs is not None and self.num_epochs < 1:
            raise ValueError(f"data.num_epochs must be positive or None, got {self.num_epochs}")


class _Records:
    """All records of the configured files, validated once up front (counts, item_ids, mask check)."""

    def __init__(self, cfg: DataConfig):
        files = list(cfg.train_files)
        for f in files:
            if epath.Path(f).is_dir() and not (len(files) == 1 and is_tfds_dir(f)):
                raise FileNotFoundError(f"data.train_files: {f} is a directory but not one prepared TFDS dataset "
                                        "(expected .../atlas_trajectories/1.0.0 with dataset_info.json)")
        if len(files) == 1 and is_tfds_dir(files[0]):
            self.source = open_array_record(files[0], cfg.split)
            self.where = f"{files[0]}[{cfg.split}]"
            self.report = ReadReport()
            self.indices, self.num_steps, seen = [], {}, {}
            for i in range(len(self.source)):
                self.report.read += 1
                try:
                    traj = decode_example(self.source[i], f"{self.where} record {i}")
                    if traj.item_id in seen:
                        raise TrajectoryError(f"{self.where} record {i} item_id={traj.item_id!r}: duplicate; "
                                              f"first at record {seen[traj.item_id]}")
                except (TrajectoryError, ValueError) as e:
                    if cfg.on_error == "raise":
                        raise
                    self.report.reject(getattr(e, "reason", "invalid"))
                    continue
                seen[traj.item_id] = i
                self.indices.append(i)
                self.num_steps[traj.item_id] = traj.num_steps
                self.report.used += 1
            self.trajectories = None
        else:
            self.trajectories, self.report = read_trajectories(files, on_error=cfg.on_error)
            self.num_steps = {t.item_id: t.num_steps for t in self.trajectories}

    def __len__(self) -> int:
        return len(self.trajectories if self.trajectories is not None else self.indices)

    def get(self, i: int):
        if self.trajectories is not None:
            return self.trajectories[i]
        j = self.indices[i]
        return decode_example(self.source[j], f"{self.where} record {j}")


class _EncodeOnce:
    """Encodes each record of this process once per run and serves the cached features after.

    The dataset repeats *indices* and maps them through this cache, so later epochs (and the
    data profile the trainer takes before training) re-pack but never re-render the chat
    template or re-tokenize. Grain may call it from several threads: one lock guards the cache
    and the encoder's report counters, which therefore count each record once.

    A repeating dataset whose records all encode to nothing (e.g. seq_len shorter than every
    task prompt, so no weighted token survives truncation) would otherwise loop forever
    without yielding a batch: after a whole epoch of nothing, it fails with the reasons.
    """

    def __init__(self, records: "_Records", encoder: TrajectoryEncoder, records_per_epoch: int, where: str,
                 cache: dict, lock: threading.Lock):
        self.records = records
        self.encoder = encoder
        self.lock = lock  # one cache, lock and encoder report for all shards of a process
        self.cache: dict[int, dict | None] = cache
        self.records_per_epoch = records_per_epoch
        self.where = where
        self.empty_in_a_row = 0

    def __getstate__(self):  # Grain worker processes get a copy (and their own cache); locks do not pickle
        state = dict(self.__dict__)
        del state["lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.lock = threading.Lock()

    def __call__(self, index: int):
        with self.lock:
            if index not in self.cache:
                self.cache[index] = self.encoder.features(self.records.get(index))
            features = self.cache[index]
            self.empty_in_a_row = 0 if features is not None else self.empty_in_a_row + 1
            if self.empty_in_a_row > self.records_per_epoch:
                raise ValueError(f"{self.where}: none of the {self.records_per_epoch} trajectories of a data shard "
                                 f"produced a training sequence ({self.encoder.report.summary()}); check "
                                 f"data.seq_len / max_length against the prompt lengths, and the mask")
            return features


def _to_batch_keys(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {k: packed[k] for k in PACKED_FEATURES}
    out["segment_ids"] = packed["input_ids_segment_ids"].astype(np.int32)
    out["positions"] = packed["input_ids_positions"].astype(np.int32)
    return out


class _PadRows:
    """Pads the last, short batch of a finite epoch with empty rows (segment 0, weight 0)."""

    def __init__(self, rows: int):
        self.rows = rows

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = self.rows - len(batch["input_ids"])
        if missing == 0:
            return batch
        return {k: np.concatenate([v, np.zeros((missing,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}


@dataclasses.dataclass
class DataProfile:
    """What a stretch of batches holds: the step count of an epoch, the real tokens, and the
    largest number of weighted positions in one row (which sizes the sparse LM head)."""
    batches: int = 0
    rows: int = 0
    real_tokens: int = 0
    weighted_positions: int = 0
    max_row_weighted: int = 0

    def add(self, batch: dict[str, np.ndarray]) -> None:
        weighted_B = (batch["loss_weights"] > 0).sum(axis=1)
        self.batches += 1
        self.rows += int((batch["segment_ids"] > 0).any(axis=1).sum())
        self.real_tokens += int((batch["segment_ids"] > 0).sum())
        self.weighted_positions += int(weighted_B.sum())
        self.max_row_weighted = max(self.max_row_weighted, int(weighted_B.max(initial=0)))


class TrainData:
    """Iterator of host batches for this process; see the module docstring."""

    def __init__(self, cfg: DataConfig, tokenizer: Any = None, *, process_index: int | None = None,
                 process_count: int | None = None, shards: int | None = None):
        """``shards`` (else ``cfg.shards``, else one per process): a resumed run passes its checkpoint's."""
        import jax

        self.cfg = cfg
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        if cfg.global_batch_size % self.process_count:
            raise ValueError(f"data.global_batch_size={cfg.global_batch_size} is not divisible by "
                             f"{self.process_count} processes")
        self.local_batch_size = cfg.global_batch_size // self.process_count

        self.records = _Records(cfg)
        log.info("data %s: %s", ",".join(cfg.train_files), self.records.report.summary())
        mask = None
        if cfg.mask_file:
            mask_report = ReadReport()
            mask = read_mask(cfg.mask_file, on_error=cfg.on_error, report=mask_report)
            log.info("mask %s: %s", cfg.mask_file, mask_report.summary())
            check_mask_against(mask, self.records.num_steps)
        options = cfg.encode
        if options.max_length is None:
            options = dataclasses.replace(options, max_length=cfg.seq_len)
        self.encoder = TrajectoryEncoder(load_tokenizer(tokenizer if tokenizer is not None else cfg.tokenizer),
                                         options, mask)
        self._cache, self._lock = {}, threading.Lock()
        self._set_layout(shards or cfg.shards or self.process_count)

    def _set_layout(self, shards: int) -> None:
        """Build this process's shard pipelines for ``shards`` shards in all."""
        cfg, P = self.cfg, self.process_count
        if shards % P:
            raise ValueError(f"{shards} data shards cannot be split over {P} processes: run on a process count "
                             f"that divides {shards}, or start a new run with data.shards set to a multiple of "
                             f"every process count it will run on")
        if cfg.global_batch_size % shards:
            raise ValueError(f"data.global_batch_size={cfg.global_batch_size} is not divisible by {shards} "
                             "data shards")
        if len(self.records) < shards:
            raise ValueError(f"{len(self.records)} usable trajectories cannot feed {shards} data shards")
        self.shards = shards
        per = shards // P
        self.local_shards = list(range(self.process_index * per, (self.process_index + 1) * per))
        self.shard_batch_size = cfg.global_batch_size // shards
        self.orders = {s: self._order(s, cfg.num_epochs) for s in self.local_shards}
        where = ",".join(cfg.train_files)
        self.encoded = {s: _EncodeOnce(self.records, self.encoder, self.orders[s].per_epoch, where, self._cache,
                                       self._lock) for s in self.local_shards}
        self.iterators = {s: iter(self._packed(s, cfg.num_epochs)) for s in self.local_shards}
        self.exhausted: set[int] = set()

    def _order(self, shard: int, num_epochs: int | None) -> EpochOrder:
        cfg = self.cfg
        return EpochOrder(len(self.records), seed=cfg.seed, shuffle=cfg.shuffle, shard=shard, shards=self.shards,
                          num_epochs=num_epochs)

    def _packed(self, shard: int, num_epochs: int | None):
        """One shard: record indices -> cached encoded features -> packed rows -> [B_shard, T] batches."""
        import grain

        cfg = self.cfg
        ds = grain.MapDataset.source(self._order(shard, num_epochs)).map(self.encoded[shard])
        # bounded read-ahead: Grain's default (16 threads, 500 elements) would encode hundreds of records
        # the run may never use, each holding its whole tokenization; _EncodeOnce serializes encoding anyway
        it = ds.filter(lambda x: x is not None).to_iter_dataset(
            grain.ReadOptions(num_threads=1, prefetch_buffer_size=cfg.read_ahead))
        length = {k: cfg.seq_len for k in PACKED_FEATURES}
        it = grain.experimental.FirstFitPackIterDataset(it, length_struct=length, num_packing_bins=cfg.num_packing_bins,
                                                        seed=cfg.seed, shuffle_bins=cfg.shuffle)
        rows = self.shard_batch_size
        it = it.map(_to_batch_keys).batch(rows, drop_remainder=False).map(_PadRows(rows))
        if cfg.worker_count > 0:  # Grain worker processes run the pipeline above; the iterator state stays exact
            from absl import flags
            if not flags.FLAGS.is_parsed():  # Grain reads its absl flags in the workers; a library caller has none
                flags.FLAGS.mark_as_parsed()
            it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count))
        return it

    def profile(self, num_epochs: int = 1, max_batches: int | None = None) -> "DataProfile":
        """Counts over this process's first ``num_epochs`` epochs of batches (at most ``max_batches``),
        from separate iterators: the training iterators do not move. A process's batch count is its
        longest shard's (a shorter shard pads its rows). Encoding is cached, so the batches profiled
        are encoded once for the whole run."""
        out = DataProfile()
        iterators = [iter(self._packed(s, num_epochs)) for s in self.local_shards]
        while max_batches is None or out.batches < max_batches:
            batch = self._stack(iterators, set())
            if batch is None:
                break
            out.add(batch)
        return out

    def _stack(self, iterators: list, exhausted: set) -> dict[str, np.ndarray] | None:
        """The next rows of every shard, stacked in shard order; an exhausted shard (a finite epoch)
        gives empty rows until all are exhausted (None)."""
        parts = []
        for i, it in enumerate(iterators):
            batch = None
            if i not in exhausted:
                try:
                    batch = next(it)
                except StopIteration:
                    exhausted.add(i)
            parts.append(batch)
        if all(p is None for p in parts):
            return None
        template = next(p for p in parts if p is not None)
        parts = [p if p is not None else {k: np.zeros_like(v) for k, v in template.items()} for p in parts]
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in template}

    @property
    def read_report(self) -> ReadReport:
        return self.records.report

    @property
    def encode_report(self):
        """Counts of what this process has encoded so far, each record once (including Grain's read-ahead)."""
        return self.encoder.report

    def summary(self) -> str:
        """One line for the run log: records read/used/rejected and what encoding kept, cut and dropped."""
        return f"data: {self.read_report.summary()}; {self.encode_report.summary()}"

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self._stack([self.iterators[s] for s in self.local_shards], self.exhausted)
        if batch is None:
            raise StopIteration
        return batch

    def get_state(self) -> dict:
        """This process's shards' iterator states (JSON): ``{"shards": S, "states": {"s": state}}``."""
        return {"shards": self.shards, "states": {str(s): self.iterators[s].get_state() for s in self.local_shards}}

    def set_state(self, state: dict) -> None:
        """Resume this process's shards from this process's ``get_state()``."""
        if "shards" not in state:  # a bare Grain state (before data shards): one shard per process
            state = {"shards": self.process_count, "states": {str(self.process_index): state}}
        self._resume(state["shards"], state["states"])

    def restore(self, states: list) -> None:
        """Resume from the states of every process that wrote a checkpoint (``gather_json(get_state())``)
        on this run's process count, which must divide the shard count: each shard continues exactly
        where it stopped, so the batches are those the checkpoint's run would have read next."""
        by_shard = shard_states(states)
        self._resume(len(by_shard), by_shard)

    def _resume(self, shards: int, by_shard: dict) -> None:
        if self.cfg.shards is not None and self.cfg.shards != shards:
            raise ValueError(f"data.shards={self.cfg.shards}, but the checkpoint's data state has {shards} "
                             f"shards; drop the override or set data.shards={shards}")
        if shards != self.shards:
            self._set_layout(shards)
        for s in self.local_shards:
            if str(s) not in by_shard:
                raise ValueError(f"the data state has no iterator state for shard {s} of {shards}")
            self.iterators[s].set_state(by_shard[str(s)])
        self.exhausted = set()

    def next_global(self, mesh) -> dict:
        return to_global_batch(next(self), mesh)


def shard_states(states: list) -> dict[str, dict]:
    """{"s": Grain state} over all shards from every process's ``get_state()``. A list of bare
    Grain states (checkpoints written before data shards) is one shard per process."""
    if not states or not all(isinstance(s, dict) for s in states):
        raise ValueError("the checkpoint's data state is not a list of per-process states")
    if all("shards" not in s for s in states):
        return {str(i): s for i, s in enumerate(states)}
    counts = {s.get("shards") for s in states}
    if len(counts) != 1:
        raise ValueError(f"the checkpoint's processes disagree on the number of data shards: {counts}")
    out = {k: v for s in states for k, v in s["states"].items()}
    shards = counts.pop()
    if sorted(out, key=int) != [str(i) for i in range(shards)]:
        raise ValueError(f"the checkpoint's data state holds shards {sorted(out, key=int)}, not 0..{shards - 1}")
    return out


def to_global_batch(host_batch: dict[str, np.ndarray], mesh) -> dict:
    """Host [B_local, T] arrays of every process -> global jax.Arrays [B_global, T], batch over data x fsdp."""
    import jax

    from atlas_jax.sharding import batch_sharding

    out = {}
    for key in BATCH_KEYS:
        local = host_batch[key]
        sharding = batch_sharding(mesh, local.ndim)
        out[key] = jax.make_array_from_process_local_data(sharding, local)
    return out
