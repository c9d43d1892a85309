"""Trajectory -> token ids, per-token step index and float32 per-token loss weight."""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Mapping

import numpy as np

from atlas_jax import paths
from atlas_jax.data.length import LengthStats, char_budget, cut_messages, fit_length, max_token_chars
from atlas_jax.data.mask import WEIGHT_MODES, MaskEntry, step_weights
from atlas_jax.data.sequences import sequence_features
from atlas_jax.data.spans import SPAN_METHODS, encode_steps
from atlas_jax.data.trajectory import Trajectory

log = logging.getLogger(__name__)
_MAX_CUT_WARNINGS = 10  # then only the counts in EncodeReport


@dataclasses.dataclass(frozen=True)
class EncodeOptions:
    weight_mode: str = "mask"  # mask | all | agentgym
    unmasked: str = "error"  # mode "mask", trajectory without a mask entry: error | skip | all
    max_length: int | None = None  # tokens per sequence; None keeps everything
    drop_after_last_weighted: bool = True  # tokens after the last weighted one cannot affect the loss
    span_method: str = "auto"  # auto | markers | prefix (see spans.py)

    def __post_init__(self):
        if self.weight_mode not in WEIGHT_MODES:
            raise ValueError(f"weight_mode must be one of {WEIGHT_MODES}, got {self.weight_mode!r}")
        if self.span_method not in SPAN_METHODS:
            raise ValueError(f"span_method must be one of {SPAN_METHODS}, got {self.span_method!r}")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length must be at least 2 tokens, got {self.max_length}")


@dataclasses.dataclass(frozen=True)
class EncodedTrajectory:
    item_id: str
    token_ids: np.ndarray  # int32[L]
    step_ids: np.ndarray  # int32[L], step index of each token, -1 outside steps
    token_weights: np.ndarray  # float32[L], loss weight of each token
    num_steps: int

    def features(self) -> dict[str, np.ndarray]:
        """Shifted training arrays (see sequences.py)."""
        return sequence_features(self.token_ids, self.token_weights)


@dataclasses.dataclass
class EncodeReport:
    encoded: int = 0  # sequences produced
    skipped_unmasked: int = 0  # no mask entry, unmasked="skip"
    all_steps_unmasked: int = 0  # no mask entry, unmasked="all"
    no_weighted_tokens: int = 0  # nothing to learn from (e.g. empty critical list): not produced
    length: LengthStats = dataclasses.field(default_factory=LengthStats)

    def summary(self) -> str:
        s = f"encoded {self.encoded}"
        for name in ("skipped_unmasked", "all_steps_unmasked", "no_weighted_tokens"):
            if getattr(self, name):
                s += f", {getattr(self, name)} {name.replace('_', ' ')}"
        return f"{s}; {self.length.summary()}"


def load_tokenizer(tokenizer_or_path: Any) -> Any:
    if isinstance(tokenizer_or_path, (str, os.PathLike)):
        from transformers import AutoTokenizer
        if not paths.Path(tokenizer_or_path).is_dir():
            raise FileNotFoundError(f"tokenizer directory not found: {tokenizer_or_path}")
        return AutoTokenizer.from_pretrained(paths.local_copy(tokenizer_or_path))  # reads local files only
    return tokenizer_or_path


class TrajectoryEncoder:
    """Encodes trajectories with a Hugging Face tokenizer's chat template and a weight mode.

    ``encode`` gives the full sequence; ``prepare`` also applies length handling and returns
    None for trajectories that produce no training sequence, counting why in ``report``.
    """

    def __init__(self, tokenizer: Any, options: EncodeOptions = EncodeOptions(),
                 mask: Mapping[str, MaskEntry] | None = None, chat_template: str | None = None):
        self.tokenizer = load_tokenizer(tokenizer)
        self.options = options
        self.mask = mask
        self.chat_template = chat_template
        self.report = EncodeReport()
        self._budget_chars: int | None = None  # from the tokenizer's vocabulary, on first use
        if options.weight_mode == "mask" and mask is None:
            raise ValueError("weight_mode 'mask' needs a mask file (data.mask_file), or use weight_mode 'all'")

    def encode(self, traj: Trajectory, weights: np.ndarray | None = None, *,
               messages: list[dict] | None = None) -> EncodedTrajectory:
        """Tokens, step ids and weights; ``weights`` (float32[num_steps]) overrides the weight mode;
        ``messages`` replaces the trajectory's text (its turns cut, see length.cut_messages)."""
        messages = traj.messages() if messages is None else messages
        token_ids_L, step_ids_L = encode_steps(self.tokenizer, messages, method=self.options.span_method,
                                               chat_template=self.chat_template,
                                               where=f"{traj.source} item_id={traj.item_id!r}")
        if weights is None:
            weights = step_weights(traj, self.options.weight_mode, self.mask, unmasked="all")
        weights = np.asarray(weights, np.float32)
        token_weights_L = np.where(step_ids_L >= 0, weights[np.maximum(step_ids_L, 0)], 0.0).astype(np.float32)
        return EncodedTrajectory(traj.item_id, token_ids_L, step_ids_L, token_weights_L, traj.num_steps)

    def cut(self, traj: Trajectory) -> tuple[list[dict], int]:
        """The trajectory's messages cut to what max_length can use (length.cut_messages), number cut."""
        if self.options.max_length is None:
            return traj.messages(), 0
        if self._budget_chars is None:
            self._budget_chars = char_budget(self.options.max_length, max_token_chars(self.tokenizer))
        return cut_messages(traj.messages(), self._budget_chars)

    def prepare(self, traj: Trajectory) -> EncodedTrajectory | None:
        opts = self.options
        weights = step_weights(traj, opts.weight_mode, self.mask, unmasked=opts.unmasked)
        if weights is None:
            self.report.skipped_unmasked += 1
            return None
        if opts.weight_mode == "mask" and traj.item_id not in self.mask:
            self.report.all_steps_unmasked += 1
        if not (weights > 0).any():
            self.report.no_weighted_tokens += 1
            return None
        messages, cut = self.cut(traj)
        enc = self.encode(traj, weights, messages=messages)
        length = self.report.length
        if cut:
            length.messages_cut += cut
            length.sequences_with_cut_messages += 1
            if length.sequences_with_cut_messages <= _MAX_CUT_WARNINGS:
                log.warning("%s item_id=%r: %d messages cut to %d characters before tokenizing (all beyond "
                            "max_length=%d tokens)", traj.source, traj.item_id, cut, self._budget_chars,
                            opts.max_length)
        cut_before = length.truncated_weighted_tokens
        ids, steps, w = fit_length(enc.token_ids, enc.step_ids, enc.token_weights, max_length=opts.max_length,
                                   drop_after_last_weighted=opts.drop_after_last_weighted, stats=length)
        if length.truncated_weighted_tokens > cut_before and length.truncated_sequences <= _MAX_CUT_WARNINGS:
            log.warning("%s item_id=%r: max_length=%d cuts %d weighted tokens (steps %s)%s", traj.source, traj.item_id,
                        opts.max_length, length.truncated_weighted_tokens - cut_before,
                        sorted(set(enc.step_ids[opts.max_length:][enc.token_weights[opts.max_length:] > 0].tolist())),
                        "; further cuts are only counted" if length.truncated_sequences == _MAX_CUT_WARNINGS else "")
        if not (w[1:] > 0).any():  # position 0 is never a target: a sequence needs a weighted token after it
            self.report.no_weighted_tokens += 1
            return None
        self.report.encoded += 1
        return EncodedTrajectory(enc.item_id, ids, steps, w, enc.num_steps)

    def features(self, traj: Trajectory) -> dict[str, np.ndarray] | None:
        enc = self.prepare(traj)
        return None if enc is None else enc.features()
