"""Which token ids end an assistant turn: the chat template's end-of-turn token, the
tokenizer's eos, and the eos ids of ``generation_config.json`` / the model config.

The template's end of turn is found by rendering a conversation whose assistant turn is a
sentinel and reading the first token after it (``<|eot_id|>`` for Llama 3, ``<|im_end|>``
for Qwen, ``</s>`` for Mistral), so a template need not be known by name.
"""
from __future__ import annotations

import json
from typing import Any, Iterable

from etils.epath import Path

_SENTINEL = "SENTINEL-4f1d"


def template_end_of_turn(tokenizer: Any, chat_template: str | None = None) -> int | None:
    """The special token a rendered assistant turn ends with, or None if it ends in plain text."""
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _SENTINEL}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, chat_template=chat_template)
    except Exception:  # noqa: BLE001 - a template that rejects this probe just has no detectable end
        return None
    tail = text[text.rfind(_SENTINEL) + len(_SENTINEL):] if _SENTINEL in text else ""
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    return ids[0] if ids and ids[0] in special else None


def _as_ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def generation_config_eos(paths: Iterable[str | Path]) -> list[int]:
    """eos_token_id of every existing generation_config.json / config.json among ``paths``."""
    ids: list[int] = []
    for path in paths:
        path = Path(path)
        if path.is_file():
            try:
                ids += _as_ids(json.loads(path.read_text()).get("eos_token_id"))
            except (json.JSONDecodeError, TypeError, ValueError) as e:
                raise ValueError(f"{path}: cannot read eos_token_id ({e})") from None
    return ids


def stop_token_ids(tokenizer: Any, config_paths: Iterable[str | Path] = (), extra: Iterable[int] = (),
                   chat_template: str | None = None) -> list[int]:
    """Sorted union of the end-of-turn, tokenizer eos, config eos and ``extra`` ids."""
    ids = set(_as_ids(tokenizer.eos_token_id)) | set(generation_config_eos(config_paths)) | set(extra)
    end_of_turn = template_end_of_turn(tokenizer, chat_template)
    if end_of_turn is not None:
        ids.add(end_of_turn)
    return sorted(ids)
