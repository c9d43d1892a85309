"""Length handling: cut messages no max_length sequence can reach before tokenizing, drop the tail no
loss can see, then truncate to max_length, counting every cut.

Bounded memory: a message far longer than max_length must not be tokenized whole. No token covers more
than ``max_token_chars`` characters (the longest vocabulary entry: a byte-level BPE entry has one
character per byte, a SentencePiece byte-fallback entry "<0xNN>" six for one byte), so the first
``char_budget`` characters of the conversation's message texts give at least max_length + CUT_MARGIN_TOKENS
tokens, and every character after them lies beyond max_length: those are cut before tokenizing.
A conversation within the budget is never changed. For one that is cut, tokens before max_length are
those of the whole text unless one pre-token (a run without a word boundary) spans more than
CUT_MARGIN_TOKENS tokens across the cut. Not covered: a tokenizer whose unknown token swallows
arbitrary text (WordPiece's [UNK] for a whole word); chat tokenizers have byte fallback.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

CUT_MARGIN_TOKENS = 64  # tokens past max_length kept, so the cut's boundary cannot change what is kept


def max_token_chars(tokenizer: Any) -> int:
    """An upper bound on the characters of text one token stands for: the longest vocabulary entry."""
    return max(1, max(map(len, tokenizer.get_vocab()), default=1))


def char_budget(max_length: int, token_chars: int) -> int:
    """Message characters that surely cover ``max_length`` tokens (see the module docstring)."""
    return (max_length + CUT_MARGIN_TOKENS) * token_chars


def cut_messages(messages: Sequence[dict], budget_chars: int) -> tuple[list[dict], int]:
    """(messages whose contents together keep at most ``budget_chars`` characters, number cut).

    Every turn is kept, so the template renders the same structure (Mistral's system text goes into
    the last user turn) and every step keeps a span; a step cut to whitespace keeps its first visible
    character, since a step must render to some text."""
    out, cut, remaining = [], 0, budget_chars
    for message in messages:
        text = message["content"]
        if len(text) > remaining:
            kept = text[:max(remaining, 0)]
            if message["role"] == "assistant" and not kept.strip():
                kept = text[:len(text) - len(text.lstrip()) + 1]
            message, cut = {**message, "content": kept}, cut + 1
        remaining -= len(message["content"])
        out.append(message)
    return out, cut


@dataclasses.dataclass
class LengthStats:
    sequences: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tail_tokens_dropped: int = 0  # after the last weighted token: cannot affect the loss
    truncated_sequences: int = 0  # cut by max_length
    truncated_tokens: int = 0
    truncated_weighted_tokens: int = 0  # weighted tokens lost to max_length
    steps_cut: int = 0  # weighted steps that lost some but not all tokens
    steps_dropped: int = 0  # weighted steps that lost all their tokens
    messages_cut: int = 0  # messages cut to the character budget before tokenizing (cut_messages)
    sequences_with_cut_messages: int = 0

    def add(self, other: "LengthStats") -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def summary(self) -> str:
        s = (f"{self.sequences} sequences, {self.tokens_in} -> {self.tokens_out} tokens; "
             f"{self.tail_tokens_dropped} tokens after the last weighted token dropped")
        if self.truncated_sequences:
            s += (f"; max_length truncated {self.truncated_sequences} sequences ({self.truncated_tokens} tokens, "
                  f"{self.truncated_weighted_tokens} weighted; {self.steps_cut} weighted steps cut inside, "
                  f"{self.steps_dropped} lost entirely)")
        if self.messages_cut:
            s += (f"; {self.messages_cut} messages in {self.sequences_with_cut_messages} sequences cut before "
                  "tokenizing (beyond max_length; weighted tokens lost there are not counted)")
        return s


def fit_length(token_ids_L: np.ndarray, step_ids_L: np.ndarray, weights_L: np.ndarray, *,
               max_length: int | None, drop_after_last_weighted: bool = True,
               stats: LengthStats | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shorten one encoded sequence; returns (token_ids, step_ids, weights) views and updates ``stats``.

    Tokens after the last weighted token go first (the loss never sees them); then anything
    past ``max_length`` is cut, and weighted tokens/steps lost that way are counted.
    """
    stats = stats if stats is not None else LengthStats()
    n = len(token_ids_L)
    stats.sequences += 1
    stats.tokens_in += n
    keep = n
    weighted = np.flatnonzero(weights_L > 0)
    if drop_after_last_weighted and len(weighted):
        keep = int(weighted[-1]) + 1
        stats.tail_tokens_dropped += n - keep
    if max_length is not None and keep > max_length:
        stats.truncated_sequences += 1
        stats.truncated_tokens += keep - max_length
        stats.truncated_weighted_tokens += int((weights_L[max_length:keep] > 0).sum())
        lost_steps = set(np.unique(step_ids_L[max_length:keep][weights_L[max_length:keep] > 0]).tolist())
        kept_steps = set(np.unique(step_ids_L[:max_length]).tolist())
        stats.steps_cut += len(lost_steps & kept_steps)
        stats.steps_dropped += len(lost_steps - kept_steps)
        keep = max_length
    stats.tokens_out += keep
    return token_ids_L[:keep], step_ids_L[:keep], weights_L[:keep]
