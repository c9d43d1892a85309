"""Length handling: drop the tail no loss can see, then truncate to max_length, counting every cut."""
from __future__ import annotations

import dataclasses

import numpy as np


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
