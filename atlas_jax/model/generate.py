"""Batched, KV-cached text generation: greedy or temperature / top-p sampling.

``generate(model, prompts, stop_ids, ...)`` left-pads the prompts into one [B, P] block, runs
one prefill over it and then a ``lax.while_loop`` of single-token decode steps, all inside one
jitted function. Buffers have fixed sizes (P is the longest prompt rounded up to
``prompt_bucket``; the cache holds P + max_new_tokens slots), so the function compiles once
per (batch, P, max_new_tokens, greedy) and is reused across calls. Rows stop independently at
their first stop token (kept in the output, as transformers does); the loop ends when every
row has stopped or ``max_new_tokens`` is reached. A model placed on a mesh
(``place_model``) generates sharded: the batch and the cache follow the ``act_*`` rules.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from atlas_jax.model.kv_cache import KVCache
from atlas_jax.model.transformer import CausalLM
from atlas_jax.sharding import named_sharding, use_mesh


@dataclasses.dataclass
class Generation:
    """Per row: generated ids (through the stop token, if any) and whether a stop token ended it."""

    tokens: list[list[int]]
    stopped: list[bool]
    prompt_len: int  # P, the padded prompt block

    @property
    def num_tokens(self) -> int:
        return sum(len(t) for t in self.tokens)


def sample_logits(logits_BxV: jax.Array, rng: jax.Array, temperature: jax.Array, top_p: jax.Array) -> jax.Array:
    """Token ids [B] drawn from softmax(logits / temperature) restricted to the top-p nucleus:
    the most probable tokens whose probabilities, summed before each one, stay below ``top_p``
    (so the most probable token is always kept)."""
    scaled_BxV = logits_BxV.astype(jnp.float32) / temperature
    sorted_BxV = jnp.flip(jnp.sort(scaled_BxV, axis=-1), axis=-1)
    probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
    mass_before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV
    keep_BxV = mass_before_BxV < top_p
    threshold_Bx1 = jnp.min(jnp.where(keep_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
    masked_BxV = jnp.where(scaled_BxV >= threshold_Bx1, scaled_BxV, -jnp.inf)
    return jax.random.categorical(rng, masked_BxV, axis=-1).astype(jnp.int32)


def prefill(model: CausalLM, cache: KVCache, ids_BxT, positions_BxT, segments_BxT):
    """Write ``T`` tokens per row into ``cache``; the logits after each row's last column."""
    hidden_BxTxE, cache = model.hidden_states(ids_BxT, positions_BxT, segments_BxT, cache)
    return model.logits(hidden_BxTxE[:, -1]), cache


def decode(model: CausalLM, cache: KVCache, logits_BxV, pos_B, done_B, stop_ids_N, rng, temperature, top_p, *,
           max_new_tokens: int, greedy: bool, pad_id: int):
    """Up to ``max_new_tokens`` decode steps from ``logits_BxV`` (rows at next position
    ``pos_B``); step ``j`` writes its token into slot ``cache.index`` (+ j). Returns the tokens
    [B, N] (``pad_id`` after a row's stop) and the cache (its ``index`` says how many steps ran)."""
    batch = logits_BxV.shape[0]
    out_BxN = jnp.full((batch, max_new_tokens), pad_id, jnp.int32)

    def pick(logits, key):
        if greedy:
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return sample_logits(logits, key, temperature, top_p)

    def cond(carry):
        step, _, _, _, done, _, _ = carry
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        step, cache, logits, pos_B, done, out, key = carry
        key, sub = jax.random.split(key)
        token_B = jnp.where(done, pad_id, pick(logits, sub))
        out = out.at[:, step].set(token_B)
        # a finished row keeps stepping (fixed shapes) as padding: segment 0, invisible to itself
        live_Bx1 = (~done).astype(jnp.int32)[:, None]
        step_logits, cache = model(token_B[:, None], pos_B[:, None], live_Bx1, cache)
        done = done | jnp.isin(token_B, stop_ids_N)
        return step + 1, cache, step_logits[:, 0], pos_B + 1, done, out, key

    carry = (jnp.zeros((), jnp.int32), cache, logits_BxV, pos_B, done_B, out_BxN, rng)
    _, cache, _, _, _, out_BxN, _ = jax.lax.while_loop(cond, body, carry)
    return out_BxN, cache


def _generate_impl(graphdef, state, ids_BxP, segments_BxP, stop_ids_N, rng, temperature, top_p, *,
                   max_new_tokens: int, greedy: bool, pad_id: int):
    model = nnx.merge(graphdef, state)
    batch, prompt_len = ids_BxP.shape
    with use_mesh(model.mesh):
        cache = KVCache.init(model.cfg, batch, prompt_len + max_new_tokens)
    # left padding: each row's positions start at 0 on its first real token
    positions_BxP = jnp.maximum(jnp.cumsum(segments_BxP, axis=1) - 1, 0).astype(jnp.int32)
    logits_BxV, cache = prefill(model, cache, ids_BxP, positions_BxP, segments_BxP)
    done_B = segments_BxP[:, -1] == 0  # empty filler rows never generate
    out_BxN, _ = decode(model, cache, logits_BxV, positions_BxP[:, -1] + 1, done_B, stop_ids_N, rng, temperature,
                        top_p, max_new_tokens=max_new_tokens, greedy=greedy, pad_id=pad_id)
    return out_BxN


_generate_jit = jax.jit(_generate_impl, static_argnames=("graphdef", "max_new_tokens", "greedy", "pad_id"))


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def left_pad(prompts: Sequence[Sequence[int]], batch: int, length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """[batch, length] ids and segment ids (1 real, 0 padding); rows past ``prompts`` are filler."""
    ids = np.full((batch, length), pad_id, np.int32)
    segments = np.zeros((batch, length), np.int32)
    for i, prompt in enumerate(prompts):
        if len(prompt):
            ids[i, length - len(prompt):] = prompt
            segments[i, length - len(prompt):] = 1
    return ids, segments


def generate(model: CausalLM, prompts: Sequence[Sequence[int]], stop_ids: Sequence[int], *,
             max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
             pad_id: int = 0, batch_size: int | None = None, prompt_bucket: int = 64,
             max_prompt_len: int | None = None) -> Generation:
    """Continue each token-id prompt; ``temperature == 0`` is greedy (argmax).

    ``batch_size`` fixes the compiled batch (prompts beyond it are an error; fewer are padded
    with filler rows), so a loop whose live batch shrinks keeps one compilation.
    ``max_prompt_len`` caps the bucketed prompt block (the context left for the prompt).
    """
    batch = batch_size or len(prompts)
    if not prompts or len(prompts) > batch:
        raise ValueError(f"generate: {len(prompts)} prompts for a batch of {batch}")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("generate: empty prompt (every row needs at least one token)")
    if max_new_tokens <= 0 or temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"generate: need max_new_tokens > 0, temperature >= 0, 0 < top_p <= 1; got "
                         f"{max_new_tokens}, {temperature}, {top_p}")
    longest = max(len(p) for p in prompts)
    prompt_len = round_up(longest, prompt_bucket)
    if max_prompt_len is not None:
        if longest > max_prompt_len:
            raise ValueError(f"generate: a prompt of {longest} tokens exceeds max_prompt_len={max_prompt_len}")
        prompt_len = min(prompt_len, max_prompt_len)
    ids, segments = left_pad(prompts, batch, prompt_len, pad_id)
    if model.mesh is not None:
        # batch over data x fsdp where it divides (else replicated), as the act_batch rule says
        sharding = named_sharding(model.mesh, ("act_batch", "act_seq"), ids.shape)
        ids, segments = (jax.device_put(a, sharding) for a in (ids, segments))
    graphdef, state = nnx.split(model)
    out_BxN = _generate_jit(graphdef, state, ids, segments, jnp.asarray(sorted(set(stop_ids)) or [-1], jnp.int32),
                               jax.random.key(seed), jnp.float32(max(temperature, 1e-6)), jnp.float32(top_p),
                               max_new_tokens=max_new_tokens, greedy=temperature == 0, pad_id=pad_id)
    out = np.asarray(out_BxN)
    stop = set(stop_ids)
    tokens, stopped = [], []
    for row in out[:len(prompts)]:
        hits = [i for i, t in enumerate(row) if int(t) in stop]
        end = hits[0] + 1 if hits else len(row)
        tokens.append([int(t) for t in row[:end]])
        stopped.append(bool(hits))
    return Generation(tokens, stopped, prompt_len)
