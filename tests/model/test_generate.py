"""KV-cached generation: greedy output equals transformers' ``generate`` token for token
(left-padded batch of different prompt lengths, stopping at an eos id), sharded generation
equals unsharded, and top-p sampling draws from the analytically expected nucleus."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from atlas_jax.convert.checkpoint import load_hf
from atlas_jax.model import place_model
from atlas_jax.model.generate import generate, sample_logits
from atlas_jax.sharding import MeshConfig, build_mesh
from tests.model.conftest import VOCAB, build_hf_model, torch_model

PROMPTS = [[5, 17, 99, 3, 42, 7, 8], [200, 13], [64, 65, 66, 67]]
PAD = 0


def hf_greedy(hf_dir, prompts, max_new_tokens, eos_ids):
    """transformers' greedy ``generate`` on a left-padded batch; new tokens per row, through eos."""
    model = torch_model(str(hf_dir))
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=eos_ids, pad_token_id=PAD)
    rows = []
    for row in out[:, width:].tolist():
        hits = [i for i, t in enumerate(row) if t in eos_ids]
        rows.append(row[:hits[0] + 1] if hits else row)
    return rows


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """The tiny Llama with matrices scaled from std 0.02 to ~0.3: random init at 0.02 greedily
    repeats one token forever, which would make a weak parity check."""
    hf = build_hf_model("llama", seed=1)
    with torch.no_grad():
        for p in hf.parameters():
            if p.ndim == 2:
                p.mul_(15.0)
    path = tmp_path_factory.mktemp("hf_llama_sharp")
    hf.save_pretrained(path)
    return path, load_hf(path, dtype="float32")


def test_greedy_matches_transformers_generate(llama):
    hf_dir, model = llama
    free = hf_greedy(hf_dir, PROMPTS, 10, [VOCAB + 1])  # an id never generated: no stopping
    assert all(len(r) == 10 for r in free) and len(set(free[0])) > 5
    # stop on a token row 0 first emits mid-way, so rows end at different steps
    eos = [free[0][4]]
    assert eos[0] not in free[0][:4]
    expected = hf_greedy(hf_dir, PROMPTS, 10, eos)
    ours = generate(model, PROMPTS, eos, max_new_tokens=10, pad_id=PAD, prompt_bucket=8)
    assert ours.tokens == expected
    assert ours.stopped == [eos[0] in row for row in expected]
    assert ours.stopped[0] and len(ours.tokens[0]) == 5
    # a filler-padded larger batch (one compiled shape for a shrinking live batch) gives the same rows
    padded = generate(model, PROMPTS[:2], eos, max_new_tokens=10, pad_id=PAD, batch_size=4, prompt_bucket=8)
    assert padded.tokens == expected[:2]


def test_sharded_and_scanned_generation_equal_single_device(llama):
    """Unrolled layers on one device (the path checked against transformers above) vs the
    same weights with scanned layers on a data x fsdp x tensor mesh of 8 devices."""
    hf_dir, model = llama
    mesh = build_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = place_model(load_hf(hf_dir, dtype="float32", scan_layers=True), mesh)
    prompts = PROMPTS + [[9, 10, 11]]  # batch 4: divisible by data x fsdp
    single = generate(model, prompts, [], max_new_tokens=6, pad_id=PAD, prompt_bucket=8)
    multi = generate(sharded, prompts, [], max_new_tokens=6, pad_id=PAD, prompt_bucket=8)
    assert multi.tokens == single.tokens


def test_top_p_sampling_draws_from_the_nucleus():
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    logits = jnp.log(jnp.asarray(np.tile(probs, (20000, 1)), jnp.float32))
    draws = np.asarray(sample_logits(logits, jax.random.key(0), jnp.float32(1.0), jnp.float32(0.7)))
    freq = np.bincount(draws, minlength=4) / len(draws)
    # nucleus {0, 1} (mass before token 2 is 0.8 >= 0.7), renormalised: 0.625 / 0.375
    np.testing.assert_allclose(freq, [0.625, 0.375, 0, 0], atol=0.015)
    # temperature 2 flattens: p ∝ sqrt(probs), no truncation
    draws = np.asarray(sample_logits(logits, jax.random.key(1), jnp.float32(2.0), jnp.float32(1.0)))
    expected = np.sqrt(probs) / np.sqrt(probs).sum()
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / len(draws), expected, atol=0.015)


def play_turns(session_rows, turns, observations, generate_fn, restart_at=None):
    """Multi-turn conversations: prompt_{t+1} = prompt_t + reply_t + observation_t (the reply's
    last token replaced on odd turns, as a chat template re-tokenising a reply would do); at
    turn ``restart_at`` row 1 starts a new, longer conversation (a new episode in its slot)."""
    prompts = {row: list(p) for row, p in enumerate(PROMPTS[:session_rows])}
    replies = []
    for t in range(turns):
        out = generate_fn(prompts)
        replies.append(out)
        for row, (tokens, _) in out.items():
            reply = tokens[:-1] + [(tokens[-1] + 1) % VOCAB] if t % 2 else tokens
            prompts[row] = prompts[row] + reply + observations[(row + t) % len(observations)]
        if t + 1 == restart_at:
            prompts[1] = list(range(100, 120))
    return replies


@pytest.mark.parametrize("restart_at,grow", [(None, 64), (2, 16)])
def test_cached_turns_equal_full_reprefill(llama, restart_at, grow):
    """A DecodeSession (cache kept between turns; compaction and refills when slots run out)
    gives greedy replies equal token for token to generating each prompt afresh."""
    from atlas_jax.model.decode_session import DecodeSession

    _, model = llama
    observations = [[11, 12, 13], [30, 31], [77, 78, 79, 80, 81]]
    stop = [VOCAB + 1]  # never generated: every reply has max_new tokens
    session = DecodeSession(model, rows=3, slots=40, max_new_tokens=4, chunk=8, pad_id=PAD, grow=grow)

    def fresh(prompts):
        out = generate(model, [prompts[r] for r in sorted(prompts)], stop, max_new_tokens=4, pad_id=PAD,
                       prompt_bucket=8)
        return {r: (t, s) for r, t, s in zip(sorted(prompts), out.tokens, out.stopped)}

    cached = play_turns(3, 4, observations, lambda p: session.generate(p, stop), restart_at)
    expected = play_turns(3, 4, observations, fresh, restart_at)
    assert cached == expected
    # the cache was reused (only new tokens prefilled), compacted when full, grown 16 slots at a time up to
    # 40, refilled when even that did not fit
    assert session.stats.prefilled_tokens < session.stats.prompt_tokens / 2
    assert session.stats.compactions > 0 and (session.stats.refills > 0) == (restart_at is not None)
    assert (session.stats.growths > 0) == (grow == 16) and session.capacity == 40
