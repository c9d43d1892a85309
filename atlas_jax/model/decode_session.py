"""Multi-turn generation that keeps each conversation's KV cache between turns.

An agent's prompt at turn ``t + 1`` is its prompt at turn ``t``, its reply and one new
observation, so re-prefilling the whole conversation every turn repeats almost all the work.
A :class:`DecodeSession` holds one cache of fixed shape ``[layers, rows, kv heads, slots, dim]``
for a fixed number of rows (one conversation each) and, per row on the host, the token ids its
valid slots hold, in order. A turn:

1. For each row, the longest common prefix of the cached tokens and the new prompt is kept;
   cached tokens after it are invalidated (segment 0: invisible to attention), e.g. where the
   chat template re-tokenises a reply differently from how it was generated.
2. The rest of each prompt (usually the observation) is left-padded into one block and written
   at the cache's next slots in chunks of ``chunk`` tokens, with each token's true position in
   its conversation (RoPE positions are per row, not per slot; padding has segment 0).
3. Decoding continues from each row's last prompt token, as in :func:`generate`.

Shapes do not follow prompt lengths: prefill runs in chunks of ``chunk`` tokens and decode at a
fixed ``max_new_tokens``, so an eval compiles one prefill chunk and one decode loop per cache
size. Slots are shared by all rows (one write index), so rows that add fewer tokens than others
leave invalid slots behind; when the next turn would not fit, the cache is compacted (each row's
valid slots moved to the front, in order); if that is not enough it grows by ``grow`` slots (a
new shape: decode reads every slot, so a cache sized for the longest context would slow every
step of short conversations), up to ``slots``; at that size it is refilled from scratch.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from atlas_jax.model.generate import decode, prefill, round_up
from atlas_jax.model.kv_cache import KVCache
from atlas_jax.model.transformer import CausalLM
from atlas_jax.sharding import use_mesh


@functools.partial(jax.jit, static_argnames=("graphdef", "batch", "slots"))
def _init_jit(graphdef, state, *, batch: int, slots: int):
    model = nnx.merge(graphdef, state)
    with use_mesh(model.mesh):
        return KVCache.init(model.cfg, batch, slots)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _prefill_jit(graphdef, state, cache, ids_BxT, positions_BxT, segments_BxT):
    return prefill(nnx.merge(graphdef, state), cache, ids_BxT, positions_BxT, segments_BxT)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "greedy", "pad_id"))
def _decode_jit(graphdef, state, cache, logits_BxV, pos_B, done_B, stop_ids_N, rng, temperature, top_p, *,
                max_new_tokens: int, greedy: bool, pad_id: int):
    return decode(nnx.merge(graphdef, state), cache, logits_BxV, pos_B, done_B, stop_ids_N, rng, temperature, top_p,
                  max_new_tokens=max_new_tokens, greedy=greedy, pad_id=pad_id)


@functools.partial(jax.jit, static_argnames=("slots",))
def _grow_jit(cache: KVCache, *, slots: int):
    """The cache with empty slots (segment 0) appended up to ``slots``."""
    def pad(a, axis):
        widths = [(0, 0)] * a.ndim
        widths[axis] = (0, slots - a.shape[axis])
        return jnp.pad(a, widths)

    return KVCache(pad(cache.k_LxBxKxSxD, 3), pad(cache.v_LxBxKxSxD, 3), pad(cache.positions_BxS, 1),
                   pad(cache.segments_BxS, 1), cache.index)


@jax.jit
def _keep_jit(cache: KVCache, keep_BxS):
    return dataclasses.replace(cache, segments_BxS=cache.segments_BxS * keep_BxS)


@jax.jit
def _compact_jit(cache: KVCache, order_BxS, index):
    """Row ``b``'s slot ``j`` becomes its old slot ``order_BxS[b, j]``; the write index moves to ``index``."""
    def take(a):
        return jnp.take_along_axis(a, order_BxS[None, :, None, :, None], axis=3)

    rows = functools.partial(jnp.take_along_axis, indices=order_BxS, axis=1)
    return KVCache(take(cache.k_LxBxKxSxD), take(cache.v_LxBxKxSxD), rows(cache.positions_BxS),
                   rows(cache.segments_BxS), jnp.asarray(index, jnp.int32))


@dataclasses.dataclass
class SessionStats:
    turns: int = 0
    prompt_tokens: int = 0  # tokens of the prompts asked for
    prefilled_tokens: int = 0  # tokens actually run through prefill (the rest came from the cache)
    compactions: int = 0
    growths: int = 0
    refills: int = 0


class DecodeSession:
    """``rows`` conversations with persistent KV caches of up to ``slots`` slots each (allocated
    ``grow`` at a time)."""

    def __init__(self, model: CausalLM, *, rows: int, slots: int, max_new_tokens: int, chunk: int = 256,
                 pad_id: int = 0, grow: int = 1024):
        if chunk <= 0 or max_new_tokens <= 0 or slots < chunk + max_new_tokens:
            raise ValueError(f"DecodeSession: need chunk > 0, max_new_tokens > 0 and slots >= chunk + "
                             f"max_new_tokens; got slots={slots}, chunk={chunk}, max_new_tokens={max_new_tokens}")
        self.model, self.rows, self.slots = model, rows, slots
        self.max_new_tokens, self.chunk, self.pad_id = max_new_tokens, chunk, pad_id
        if grow <= 0:
            raise ValueError(f"DecodeSession: grow must be positive, got {grow}")
        self.grow = grow
        self.graphdef, self.state = nnx.split(model)
        self.capacity = min(slots, round_up(chunk + max_new_tokens, grow))
        self.cache = _init_jit(self.graphdef, self.state, batch=rows, slots=self.capacity)
        self.index = 0  # host mirror of cache.index
        self.tokens: list[list[int]] = [[] for _ in range(rows)]  # per row: the ids its valid slots hold
        self.where: list[list[int]] = [[] for _ in range(rows)]  # per row: the slot of each of those ids
        self.stats = SessionStats()

    @property
    def max_prompt_len(self) -> int:
        """The longest prompt a turn accepts (a refill must fit it, rounded up to a chunk, plus the reply)."""
        return self.slots - self.max_new_tokens - self.chunk + 1

    def release(self, row: int) -> None:
        """Forget row ``row``'s conversation (its slots are invalidated at the next turn)."""
        self.tokens[row], self.where[row] = [], []

    def _valid_mask(self) -> np.ndarray:
        keep = np.zeros((self.rows, self.capacity), np.int32)
        for row, slots in enumerate(self.where):
            keep[row, slots] = 1
        return keep

    def _compact(self) -> None:
        order = np.zeros((self.rows, self.capacity), np.int32)
        for row, slots in enumerate(self.where):
            rest = np.setdiff1d(np.arange(self.capacity), slots, assume_unique=True)
            order[row] = np.concatenate([np.asarray(slots, np.int32), rest.astype(np.int32)])
            self.where[row] = list(range(len(slots)))
        self.index = max(map(len, self.where))
        self.cache = _compact_jit(self.cache, jnp.asarray(order), self.index)
        self.stats.compactions += 1

    def generate(self, prompts: dict[int, Sequence[int]], stop_ids: Sequence[int], *, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0) -> dict[int, tuple[list[int], bool]]:
        """One turn for the rows in ``prompts`` (row -> full prompt ids); other rows stay idle.
        Returns row -> (generated ids through the stop token, stopped at a stop token)."""
        if not prompts:
            return {}
        for row, ids in prompts.items():
            if not 0 <= row < self.rows:
                raise ValueError(f"DecodeSession: row {row} out of range [0, {self.rows})")
            if not 0 < len(ids) <= self.max_prompt_len:
                raise ValueError(f"DecodeSession: row {row} prompt of {len(ids)} tokens; "
                                 f"expected 1..{self.max_prompt_len}")
        # 1. keep the common prefix of what each row's cache holds and its new prompt
        deltas: dict[int, list[int]] = {}
        for row, ids in prompts.items():
            ids, cached = list(ids), self.tokens[row]
            common = 0
            for a, b in zip(cached, ids):
                if a != b:
                    break
                common += 1
            common = min(common, len(ids) - 1)  # at least one token to prefill: its logits start decoding
            self.tokens[row], self.where[row] = cached[:common], self.where[row][:common]
            deltas[row] = ids[common:]
        width = round_up(max(map(len, deltas.values())), self.chunk)
        if self.index + width + self.max_new_tokens > self.capacity:
            self._compact()
        needed = self.index + width + self.max_new_tokens
        if needed > self.capacity and self.capacity < self.slots:
            self.capacity = min(self.slots, round_up(needed, self.grow))
            self.cache = _grow_jit(self.cache, slots=self.capacity)
            self.stats.growths += 1
        if needed > self.capacity:  # at full size: refill every row's prompt from slot 0
            self.stats.refills += 1
            for row in range(self.rows):
                self.release(row)
            deltas = {row: list(ids) for row, ids in prompts.items()}
            width = round_up(max(map(len, deltas.values())), self.chunk)
            self.index = 0
        self.cache = _keep_jit(self.cache, jnp.asarray(self._valid_mask()))
        self.cache = dataclasses.replace(self.cache, index=jnp.asarray(self.index, jnp.int32))
        # 2. the new tokens, left-padded into [rows, width], written chunk by chunk
        ids_BxW = np.full((self.rows, width), self.pad_id, np.int32)
        positions_BxW = np.zeros((self.rows, width), np.int32)
        segments_BxW = np.zeros((self.rows, width), np.int32)
        for row, delta in deltas.items():
            start = len(self.tokens[row])
            ids_BxW[row, width - len(delta):] = delta
            positions_BxW[row, width - len(delta):] = np.arange(start, start + len(delta))
            segments_BxW[row, width - len(delta):] = 1
            self.where[row] += list(range(self.index + width - len(delta), self.index + width))
            self.tokens[row] += delta
        for c in range(0, width, self.chunk):
            cols = slice(c, c + self.chunk)
            logits_BxV, self.cache = _prefill_jit(self.graphdef, self.state, self.cache, ids_BxW[:, cols],
                                                  positions_BxW[:, cols], segments_BxW[:, cols])
        self.index += width
        self.stats.turns += 1
        self.stats.prompt_tokens += sum(len(p) for p in prompts.values())
        self.stats.prefilled_tokens += sum(map(len, deltas.values()))
        # 3. decode from each row's last prompt token
        done_B = segments_BxW[:, -1] == 0
        pos_B = np.array([len(t) for t in self.tokens], np.int32)
        out_BxN, self.cache = _decode_jit(
            self.graphdef, self.state, self.cache, logits_BxV, pos_B, done_B,
            jnp.asarray(sorted(set(stop_ids)) or [-1], jnp.int32), jax.random.key(seed),
            jnp.float32(max(temperature, 1e-6)), jnp.float32(top_p), max_new_tokens=self.max_new_tokens,
            greedy=temperature == 0, pad_id=self.pad_id)
        out = np.asarray(out_BxN)
        stop = set(stop_ids)
        results = {}
        for row in deltas:
            hits = [i for i, t in enumerate(out[row]) if int(t) in stop]
            end = hits[0] + 1 if hits else self.max_new_tokens
            generated = [int(t) for t in out[row, :end]]
            self.tokens[row] += generated  # every emitted token was fed back: the cache holds it
            self.where[row] += list(range(self.index, self.index + end))
            results[row] = (generated, bool(hits))
        self.index = int(self.cache.index)
        return results
