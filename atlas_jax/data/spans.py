"""Step spans: which tokens of a rendered chat belong to which assistant turn.

Definition (DESIGN.md): a step's tokens are exactly those transformers marks with
``return_assistant_tokens_mask=True`` for a template with `{% generation %}` markers.

- ``markers``: the template has markers; take transformers' mask and number its runs 0..n-1.
- ``prefix``: the template has none (the real Llama 3.1 / Mistral / Qwen2.5 / SmolLM2 templates).
  Step k's text is what the model generates after the generation prompt: U = the rendering of
  the turns up to and including step k must be a prefix of the whole rendering F (else the
  template rewrites history and needs markers); the step ends where U ends, trailing whitespace
  dropped (template glue between turns, e.g. Qwen's newline after <|im_end|>), and starts where
  the generation prompt P (the turns before it, with add_generation_prompt) ends inside U. When P
  is a prefix of U that is len(P). Mistral v0.3 folds the system message into the *last* user
  turn, so P (ending with a user turn) carries it and U (ending with the step) does not: P is U's
  prefix with the system text inserted, and the step starts after the longest end of P that U
  continues with after their common prefix (P = "...[INST] sys\n\nobs[/INST]",
  U = "...[INST] obs[/INST] step</s>": after "obs[/INST]"). Other rewrites are errors.
  F is tokenized once, as a whole; characters map to tokens by overlap, the rule transformers
  uses for its mask.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from atlas_jax.data.chat_templates import has_generation_markers
from atlas_jax.data.shared_tokens import Tokenized, tokenize, tokenize_sharing

SPAN_METHODS = ("auto", "markers", "prefix")


class SpanError(ValueError):
    """A template/conversation pair whose step spans cannot be determined."""


def render(tokenizer: Any, messages: Sequence[dict], *, add_generation_prompt: bool = False,
           chat_template: str | None = None) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt,
                                         chat_template=chat_template)


def step_char_spans(tokenizer: Any, messages: Sequence[dict], chat_template: str | None = None,
                    where: str = "", last_only: bool = False) -> tuple[str, list[tuple[int, int] | None]]:
    """(rendered text, [(start, end) character span of each assistant turn]); ``last_only``: the
    last turn's span alone, the others None (two renders instead of two per turn)."""
    full = render(tokenizer, messages, chat_template=chat_template)
    spans = []
    turns = [i for i, message in enumerate(messages) if message["role"] == "assistant"]
    for n, i in enumerate(turns):
        if last_only and n < len(turns) - 1:
            spans.append(None)
            continue
        prompt = render(tokenizer, messages[:i], add_generation_prompt=True, chat_template=chat_template)
        upto = full if i + 1 == len(messages) else render(tokenizer, messages[:i + 1], chat_template=chat_template)
        start = generation_start(prompt, upto)
        if start is None or not full.startswith(upto):
            raise SpanError(f"{where}: the chat template renders the conversation before assistant turn {len(spans)} "
                            "differently depending on what follows, so its span cannot be found by prefixes; "
                            "add {% generation %} markers to the template")
        end = len(upto.rstrip())
        if end <= start:
            raise SpanError(f"{where}: assistant turn {len(spans)} renders to no text")
        spans.append((start, end))
    return full, spans


def generation_start(prompt: str, upto: str) -> int | None:
    """Where the model's output starts in ``upto`` (the turns through a step) given ``prompt`` (the
    turns before it with the generation prompt). Either ``prompt`` is a prefix of ``upto``, or it is
    ``upto``'s prefix with text inserted (Mistral's system message): after their common prefix, the
    longest end of ``prompt`` that ``upto`` continues with. None when neither holds."""
    if upto.startswith(prompt):
        return len(prompt)
    common = len(os.path.commonprefix([prompt, upto]))
    tail, rest = prompt[common:], upto[common:]
    for k in range(min(len(tail), len(rest)), 0, -1):
        if rest.startswith(tail[len(tail) - k:]):
            return common + k
    return None


def token_step_ids(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """int32[L]: index of the span each token overlaps (the first, if several), -1 for none (spans
    sorted, disjoint)."""
    offsets_Lx2 = np.asarray(offsets, np.int64).reshape(-1, 2)
    if not len(spans):
        return np.full(len(offsets_Lx2), -1, np.int32)
    starts_S, ends_S = np.asarray(spans, np.int64).T
    k_L = np.searchsorted(ends_S, offsets_Lx2[:, 0], side="right")  # the first span ending after the token starts
    inside_L = k_L < len(spans)
    inside_L[inside_L] = offsets_Lx2[inside_L, 1] > starts_S[k_L[inside_L]]
    return np.where(inside_L, k_L, -1).astype(np.int32)


def runs_to_step_ids(mask: Sequence[int]) -> tuple[np.ndarray, int]:
    """Number the maximal runs of 1s in ``mask`` 0, 1, ...; (int32[L] step ids, number of runs)."""
    mask_L = np.asarray(mask, bool)
    starts_L = mask_L & ~np.concatenate([[False], mask_L[:-1]])
    run_L = np.cumsum(starts_L) - 1
    return np.where(mask_L, run_L, -1).astype(np.int32), int(starts_L.sum())


def encode_steps(tokenizer: Any, messages: Sequence[dict], *, method: str = "auto",
                 chat_template: str | None = None, where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Tokenize a conversation with its chat template: (int32[L] token ids, int32[L] step ids, -1 off-step)."""
    ids_L, step_ids_L, _ = encode_conversation(tokenizer, messages, method=method, chat_template=chat_template,
                                               where=where)
    return ids_L, step_ids_L


def encode_conversation(tokenizer: Any, messages: Sequence[dict], *, method: str = "auto",
                        chat_template: str | None = None, where: str = "", last_only: bool = False,
                        known: Tokenized | None = None) -> tuple[np.ndarray, np.ndarray, Tokenized | None]:
    """:func:`encode_steps`, plus the rendered text's tokens (None with ``markers``) for ``known``.

    ``last_only``: only the last assistant turn's tokens get a step id (numbered as in the whole
    conversation; the others -1), as a scoring counterfactual needs; with ``prefix`` spans that
    skips the two renders per earlier turn. ``known``: the tokens of a conversation this one
    begins like (its trajectory's full conversation): with ``prefix`` spans only what follows their
    last shared added token is tokenized (atlas_jax.data.shared_tokens; same ids). Together they
    take a trajectory's counterfactuals from O(steps^2 x tokens) of host work to O(steps x tokens)
    of rendering and O(tokens) of tokenizing."""
    if method not in SPAN_METHODS:
        raise ValueError(f"span method must be one of {SPAN_METHODS}, got {method!r}")
    template = tokenizer.get_chat_template(chat_template)
    num_steps = sum(m["role"] == "assistant" for m in messages)
    if method == "auto":
        method = "markers" if has_generation_markers(template) else "prefix"
    if method == "markers":
        out = tokenizer.apply_chat_template(list(messages), tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True, chat_template=template)
        step_ids, runs = runs_to_step_ids(out["assistant_masks"])
        if runs != num_steps:
            raise SpanError(f"{where}: the template's generation markers give {runs} assistant spans for "
                            f"{num_steps} assistant turns")
        if last_only:
            step_ids = np.where(step_ids == num_steps - 1, step_ids, -1).astype(np.int32)
        return np.asarray(out["input_ids"], np.int32), step_ids, None
    text, spans = step_char_spans(tokenizer, messages, template, where, last_only=last_only)
    tokens = tokenize(tokenizer, text) if known is None else tokenize_sharing(tokenizer, text, known)
    if last_only:  # spans before the last are None
        ids = token_step_ids(tokens.offsets_Lx2, spans[-1:])
        step_ids, expected = np.where(ids == 0, num_steps - 1, -1).astype(np.int32), min(num_steps, 1)
    else:
        step_ids, expected = token_step_ids(tokens.offsets_Lx2, spans), num_steps
    found = len(np.unique(step_ids[step_ids >= 0]))
    if found != expected:
        raise SpanError(f"{where}: {num_steps} assistant turns but only {found} have tokens")
    return tokens.ids_L, step_ids, tokens
