"""The Grain input pipeline: records -> shuffle -> shard by process -> encode (once) -> pack -> batch -> global arrays.

    data = TrainData(DataConfig(train_files=[...], tokenizer=TOK, mask_file=MASK, seq_len=2048,
                                global_batch_size=32, seed=0))
    host_batch = next(data)                      # dict of numpy [B_local, T] (see sequences.py)
    batch = data.next_global(mesh)               # dict of global jax.Array [B_global, T], batch over data x fsdp
    state = data.get_state(); data.set_state(state)   # resume on the exact next batch

Shuffling is global and seeded (every process computes the same permutation), then each process
takes every process_count-th record from its process_index, so processes see disjoint records
that together cover each epoch; every epoch is reshuffled.
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
    worker_count: int = 0  # Grain worker processes for encode + pack (0: in this process, with threads)

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
        if self.worker_count < 0:
            raise ValueError(f"data.worker_count must be >= 0, got {self.worker_count}")
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

    def __init__(self, records: "_Records", encoder: TrajectoryEncoder, records_per_epoch: int, where: str):
        self.records = records
        self.encoder = encoder
        self.lock = threading.Lock()
        self.cache: dict[int, dict | None] = {}
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
                raise ValueError(f"{self.where}: none of the {self.records_per_epoch} trajectories of this process "
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
                 process_count: int | None = None):
        import grain
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
        if len(self.records) < self.process_count:
            raise ValueError(f"{len(self.records)} usable trajectories cannot feed {self.process_count} processes")
        mask = None
        if cfg.mask_file:
            mask = read_mask(cfg.mask_file)
            check_mask_against(mask, self.records.num_steps)
        options = cfg.encode
        if options.max_length is None:
            options = dataclasses.replace(options, max_length=cfg.seq_len)
        self.encoder = TrajectoryEncoder(load_tokenizer(tokenizer if tokenizer is not None else cfg.tokenizer),
                                         options, mask)

        self._indices = grain.MapDataset.range(len(self.records))
        if cfg.shuffle:
            self._indices = self._indices.shuffle(seed=cfg.seed)
        self._indices = self._indices[self.process_index::self.process_count]
        self.encoded = _EncodeOnce(self.records, self.encoder, len(self._indices), ",".join(cfg.train_files))
        self.dataset = self._packed(cfg.num_epochs)
        self.iterator = iter(self.dataset)

    def _packed(self, num_epochs: int | None):
        """Indices -> cached encoded features -> packed rows -> [B_local, T] batches."""
        import grain

        cfg = self.cfg
        ds = self._indices.repeat(num_epochs).map(self.encoded).filter(lambda x: x is not None)
        it = ds.to_iter_dataset()
        length = {k: cfg.seq_len for k in PACKED_FEATURES}
        it = grain.experimental.FirstFitPackIterDataset(it, length_struct=length, num_packing_bins=cfg.num_packing_bins,
                                                        seed=cfg.seed, shuffle_bins=cfg.shuffle)
        it = it.map(_to_batch_keys).batch(self.local_batch_size, drop_remainder=False).map(_PadRows(self.local_batch_size))
        if cfg.worker_count > 0:  # Grain worker processes run the pipeline above; the iterator state stays exact
            from absl import flags
            if not flags.FLAGS.is_parsed():  # Grain reads its absl flags in the workers; a library caller has none
                flags.FLAGS.mark_as_parsed()
            it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count))
        return it

    def profile(self, num_epochs: int = 1, max_batches: int | None = None) -> "DataProfile":
        """Counts over this process's first ``num_epochs`` epochs of batches (at most ``max_batches``),
        from a separate iterator: the training iterator does not move. Encoding is cached, so
        the batches profiled are encoded once for the whole run."""
        out = DataProfile()
        for batch in self._packed(num_epochs):
            out.add(batch)
            if max_batches is not None and out.batches >= max_batches:
                break
        return out

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
        return next(self.iterator)

    def get_state(self) -> dict:
        return self.iterator.get_state()

    def set_state(self, state: dict) -> None:
        self.iterator.set_state(state)

    def next_global(self, mesh) -> dict:
        return to_global_batch(next(self), mesh)


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
