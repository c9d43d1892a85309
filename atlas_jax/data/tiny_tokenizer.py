"""A tiny byte-level BPE tokenizer in Hugging Face format, for tests and the CPU demo.

Trained with `tokenizers` on a few built-in agent-style sentences (about a second), with
Llama-3 special tokens and chat template, plus the control tokens of the Mistral and Qwen
template copies so those render to single tokens too. Deterministic: same vocab every build.
"""
from __future__ import annotations

import os
from typing import Iterable

from atlas_jax.data.chat_templates import LLAMA3, strip_generation_markers

BOS, EOS = "<|begin_of_text|>", "<|eot_id|>"
SPECIAL_TOKENS = [BOS, "<|start_header_id|>", "<|end_header_id|>", EOS, "<|finetune_right_pad_id|>",
                  "</s>", "[INST]", "[/INST]", "<|im_start|>", "<|im_end|>"]
PAD = "<|finetune_right_pad_id|>"
PHRASE_CHARS = 16  # longest token a corpus-trained tokenizer may learn

_CORPUS = """\
You are an agent in a text world. Your task is to reach the goal and report what you did.
Thought: I should look around the room first. Action: look
Observation: You are in a kitchen. There is a red key on the table and a closed door to the north.
Thought: The key probably opens the door. Action: pick up red key
Observation: You pick up the red key. Thought: Now I can open the door. Action: open door
Observation: The door is locked. Thought: I made a mistake; I need to use the key. Action: unlock door with red key
Crafting table: craft 4 oak planks using 1 oak log. Get 2 sticks. Inventory: [oak planks] (4)
Go to the green ball, then toggle the blue box. You see a wall 2 steps forward and a purple key 1 step left.
turn left, turn right, move forward, pick up, drop, toggle, done. 0123456789 .,:;!?'"()[]{}<>-_=+*/#@$%&
The quick brown fox jumps over the lazy dog. Science world: measure the temperature of the water with a thermometer.
"""


def build_tiny_tokenizer(out_dir: str | os.PathLike, generation_markers: bool = True, vocab_size: int = 512,
                         chat_template: str | None = None, corpus: Iterable[str] | None = None) -> str:
    """Train and save the tokenizer to ``out_dir``; returns the directory (loadable by AutoTokenizer).

    ``generation_markers=False`` saves the same template without `{% generation %}` markers;
    ``chat_template`` replaces the Llama-3 style template. ``corpus`` (texts, e.g. a training set's
    messages) replaces the built-in sentences and lets merges span words (tokens of up to
    ``PHRASE_CHARS`` bytes): environment text is templated, so whole phrases become single tokens and
    sequences get ~5x shorter than byte-like tokens (BabyAI), which is what makes a CPU-scale agent
    affordable. Text outside the corpus still encodes, byte by byte at worst.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # use_regex=False: no split at word boundaries, so merges may span words (corpus mode only)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=corpus is None)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  **({} if corpus is None else {"max_token_length": PHRASE_CHARS}))
    tok.train_from_iterator(_CORPUS.splitlines() * 4 if corpus is None else corpus, trainer=trainer)
    template = chat_template or LLAMA3
    if not generation_markers:
        template = strip_generation_markers(template)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   model_max_length=1 << 20)
    fast.chat_template = template
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    fast.save_pretrained(out_dir)
    return out_dir
