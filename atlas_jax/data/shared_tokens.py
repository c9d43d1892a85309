"""Tokenize a text that begins like one already tokenized, reusing the tokens of the shared beginning.

A scoring counterfactual is its trajectory's conversation up to one step, rewritten near its end
(an observation blanked, or the history between the task and the step dropped), so tokenizing
each one whole costs O(steps x tokens) per trajectory. Fast tokenizers split the input at added
tokens (a chat template's <|im_start|>, <|eot_id|>, ...) before normalizing or pre-tokenizing
anything, and tokenize the pieces independently; so when ``text`` and an already tokenized
``known`` text agree up to and including an added token, the tokens before that added token are
``known``'s, and only the rest of ``text`` (usually one turn) needs the tokenizer.

That rests on the tokenizer library's behaviour, so the first CHECKS reuses per tokenizer are
also tokenized whole and compared; a mismatch turns reuse off for that tokenizer (with a
warning) and every text is tokenized whole from then on. Results never depend on the reuse.
"""
from __future__ import annotations

import dataclasses
import logging
import weakref
from typing import Any

import numpy as np

CHECKS = 8
_checked: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()  # tokenizer -> checks passed (-1: off)
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Tokenized:
    text: str
    ids_L: np.ndarray  # int32[L]
    offsets_Lx2: np.ndarray  # int64[L, 2]: each token's character span in ``text``


def tokenize(tokenizer: Any, text: str) -> Tokenized:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = np.asarray(enc["offset_mapping"], np.int64).reshape(-1, 2)
    return Tokenized(text, np.asarray(enc["input_ids"], np.int32), offsets)


def common_prefix_len(a: str, b: str) -> int:
    """Length of the longest common prefix (binary search over slice comparisons, which run in C;
    os.path.commonprefix compares character by character in Python)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:  # a[:lo] == b[:lo]; is the next half equal too?
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _split_token(tokenizer: Any, known: Tokenized, common: int) -> int | None:
    """The last token of ``known`` that is an added token matched in its text (not, e.g., a byte
    fallback token that happens to be registered as added) lying wholly in its first ``common``
    characters."""
    added = tokenizer.added_tokens_decoder
    starts, ends = known.offsets_Lx2[:, 0], known.offsets_Lx2[:, 1]
    for i in np.flatnonzero(np.isin(known.ids_L, np.fromiter(added, np.int64)) & (ends <= common))[::-1]:
        if known.text[starts[i]:ends[i]] == added[int(known.ids_L[i])].content:
            return int(i)
    return None


def tokenize_sharing(tokenizer: Any, text: str, known: Tokenized) -> Tokenized:
    """``text`` tokenized as a whole would be, tokenizing only what follows the last added token it
    shares with ``known`` (see the module docstring)."""
    passed = _checked.get(tokenizer, 0)
    if passed < 0:
        return tokenize(tokenizer, text)
    split = _split_token(tokenizer, known, common_prefix_len(known.text, text))
    if split is None:
        return tokenize(tokenizer, text)
    start = int(known.offsets_Lx2[split, 0])
    rest = tokenize(tokenizer, text[start:])
    shared = Tokenized(text, np.concatenate([known.ids_L[:split], rest.ids_L]),
                       np.concatenate([known.offsets_Lx2[:split], rest.offsets_Lx2 + start]))
    if passed < CHECKS:
        whole = tokenize(tokenizer, text)
        if not np.array_equal(whole.ids_L, shared.ids_L) or not np.array_equal(whole.offsets_Lx2,
                                                                                shared.offsets_Lx2):
            _checked[tokenizer] = -1
            _log.warning("tokenizer %s: tokens reused from a shared beginning differ from tokenizing the text whole; "
                         "every text is tokenized whole from now on", type(tokenizer).__name__)
            return whole
        _checked[tokenizer] = passed + 1
    return shared
