"""The language model as the agent's policy: render each episode with the chat template,
generate all replies in one batched call (reusing each conversation's KV cache), decode them.

A prompt that cannot fit ``max_len`` together with ``max_new_tokens`` is answered with an
overflow reply (the episode ends as ``context_overflow``) instead of being truncated: a cut
conversation would no longer be the task the agent was given.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

from atlas_jax.data.spans import render
from atlas_jax.envs.agent_loop import Episode, Reply
from atlas_jax.model.decode_session import DecodeSession
from atlas_jax.model.transformer import CausalLM


@dataclasses.dataclass
class GenerationStats:
    calls: int = 0
    rows: int = 0
    tokens: int = 0  # generated tokens, through the stop token
    prompt_tokens: int = 0  # tokens of the prompts
    prefilled_tokens: int = 0  # of those, the tokens run through prefill (the rest were cached)
    seconds: float = 0.0  # wall time inside generate (compilation included)
    call_seconds: list = dataclasses.field(default_factory=list)  # per call (the first ones compile)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


class ModelPolicy:
    """One :class:`DecodeSession` row per live episode: each turn prefills only what is new in
    the conversation (the last reply's re-rendering and the observation), at one fixed shape."""

    def __init__(self, model: CausalLM, tokenizer: Any, stop_ids: Sequence[int], *, max_len: int,
                 max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                 batch_size: int = 8, prefill_chunk: int = 256, pad_id: int | None = None,
                 chat_template: str | None = None):
        if max_new_tokens >= max_len:
            raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in max_len={max_len}")
        self.model, self.tokenizer = model, tokenizer
        self.stop_ids = sorted(set(stop_ids))
        if not self.stop_ids:
            raise ValueError("ModelPolicy: no stop token ids (no eos and no chat-template end of turn found)")
        self.max_len, self.max_new_tokens = max_len, max_new_tokens
        self.temperature, self.top_p, self.seed = temperature, top_p, seed
        self.batch_size = batch_size
        if pad_id is None:  # padding is masked out; any id works, the tokenizer's is the natural one
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.pad_id = pad_id
        self.chat_template = chat_template
        # one chunk of slack: a refill of a max_len prompt rounded up to a whole chunk still fits
        self.session = DecodeSession(model, rows=batch_size, slots=max_len + prefill_chunk,
                                     max_new_tokens=max_new_tokens, chunk=prefill_chunk, pad_id=pad_id)
        self.rows: dict[int, tuple[Episode, int]] = {}  # id(episode) -> (episode, kept alive: ids stay unique; row)
        self.stats = GenerationStats()

    def encode(self, episode: Episode) -> list[int]:
        text = render(self.tokenizer, episode.messages, add_generation_prompt=True, chat_template=self.chat_template)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _assign_rows(self, episodes: Sequence[Episode]) -> list[int]:
        if len(episodes) > self.batch_size:
            raise ValueError(f"ModelPolicy: {len(episodes)} episodes for {self.batch_size} rows")
        live = {id(e) for e in episodes}
        for key in [k for k in self.rows if k not in live]:  # finished episodes free their rows
            self.session.release(self.rows.pop(key)[1])
        free = sorted(set(range(self.batch_size)) - {row for _, row in self.rows.values()})
        for episode in episodes:
            if id(episode) not in self.rows:
                self.rows[id(episode)] = (episode, free.pop(0))
                self.session.release(self.rows[id(episode)][1])
        return [self.rows[id(e)][1] for e in episodes]

    def respond(self, episodes: Sequence[Episode]) -> list[Reply]:
        replies: list[Reply | None] = [None] * len(episodes)
        rows = self._assign_rows(episodes)
        prompts: dict[int, list[int]] = {}
        limit = self.max_len - self.max_new_tokens
        for i, episode in enumerate(episodes):
            ids = self.encode(episode)
            if len(ids) > limit:
                replies[i] = Reply("", overflow=True, stopped=False)
            else:
                prompts[rows[i]] = ids
        if prompts:
            began = time.perf_counter()
            prefilled = self.session.stats.prefilled_tokens
            out = self.session.generate(prompts, self.stop_ids, temperature=self.temperature, top_p=self.top_p,
                                        seed=self.seed + self.stats.calls)
            self.stats.call_seconds.append(round(time.perf_counter() - began, 3))
            self.stats.seconds += self.stats.call_seconds[-1]
            self.stats.calls += 1
            self.stats.rows += len(prompts)
            self.stats.prompt_tokens += sum(map(len, prompts.values()))
            self.stats.prefilled_tokens += self.session.stats.prefilled_tokens - prefilled
            for i, row in enumerate(rows):
                if row in prompts:
                    tokens, stopped = out[row]
                    self.stats.tokens += len(tokens)
                    content = tokens[:-1] if stopped else tokens
                    text = self.tokenizer.decode(content, skip_special_tokens=True).strip()
                    replies[i] = Reply(text, stopped=stopped, num_tokens=len(tokens))
        return replies
