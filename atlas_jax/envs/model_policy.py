"""The language model as the agent's policy: render each episode with the chat template,
generate all replies in one batched call, decode them.

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
from atlas_jax.model.generate import generate
from atlas_jax.model.transformer import CausalLM


@dataclasses.dataclass
class GenerationStats:
    calls: int = 0
    rows: int = 0
    tokens: int = 0  # generated tokens, through the stop token
    prompt_tokens: int = 0
    seconds: float = 0.0  # wall time inside generate (compilation included)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


class ModelPolicy:
    def __init__(self, model: CausalLM, tokenizer: Any, stop_ids: Sequence[int], *, max_len: int,
                 max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                 batch_size: int = 8, prompt_bucket: int = 256, pad_id: int | None = None,
                 chat_template: str | None = None):
        if max_new_tokens >= max_len:
            raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in max_len={max_len}")
        self.model, self.tokenizer = model, tokenizer
        self.stop_ids = sorted(set(stop_ids))
        if not self.stop_ids:
            raise ValueError("ModelPolicy: no stop token ids (no eos and no chat-template end of turn found)")
        self.max_len, self.max_new_tokens = max_len, max_new_tokens
        self.temperature, self.top_p, self.seed = temperature, top_p, seed
        self.batch_size, self.prompt_bucket = batch_size, prompt_bucket
        if pad_id is None:  # padding is masked out; any id works, the tokenizer's is the natural one
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.pad_id = pad_id
        self.chat_template = chat_template
        self.stats = GenerationStats()

    def encode(self, episode: Episode) -> list[int]:
        text = render(self.tokenizer, episode.messages, add_generation_prompt=True, chat_template=self.chat_template)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def respond(self, episodes: Sequence[Episode]) -> list[Reply]:
        replies: list[Reply | None] = [None] * len(episodes)
        prompts, rows = [], []
        limit = self.max_len - self.max_new_tokens
        for i, episode in enumerate(episodes):
            ids = self.encode(episode)
            if len(ids) > limit:
                replies[i] = Reply("", overflow=True, stopped=False)
            else:
                prompts.append(ids)
                rows.append(i)
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start:start + self.batch_size]
            began = time.perf_counter()
            out = generate(self.model, chunk, self.stop_ids, max_new_tokens=self.max_new_tokens,
                           temperature=self.temperature, top_p=self.top_p, seed=self.seed + self.stats.calls,
                           pad_id=self.pad_id, batch_size=self.batch_size, prompt_bucket=self.prompt_bucket,
                           max_prompt_len=limit)
            self.stats.seconds += time.perf_counter() - began
            self.stats.calls += 1
            self.stats.rows += len(chunk)
            self.stats.tokens += out.num_tokens
            self.stats.prompt_tokens += sum(map(len, chunk))
            for row, tokens, stopped in zip(rows[start:start + self.batch_size], out.tokens, out.stopped):
                content = tokens[:-1] if stopped else tokens
                text = self.tokenizer.decode(content, skip_special_tokens=True).strip()
                replies[row] = Reply(text, stopped=stopped, num_tokens=len(tokens))
        return replies
