"""Small chat templates with the structure of the model families, with `{% generation %}` markers.

For the tiny test/demo tokenizer. The real Llama 3.1, Mistral v0.3, Qwen2.5 and SmolLM2 templates
(no markers) are test fixtures in tests/data/templates/, checked against marked copies there. These
copies keep the families' structure (headers, default system blocks, end-of-turn tokens) and wrap
exactly what the model generates after the generation prompt in `{% generation %}`. ``strip_generation_markers`` gives
the marker-free twin that renders the same text, so the span finder can be checked against
transformers' assistant mask on the marked one.
"""
from __future__ import annotations

import re

# Tiny Llama-3 style: what the demo tokenizer ships.
LLAMA3 = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}"
    "{%- else %}{{- message['content'] | trim + '<|eot_id|>' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

# Llama 3.1: an always-present system block with knowledge/today dates.
LLAMA31 = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] | trim %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\n' }}"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% generation %}{{- message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}"
    "{%- else %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

# Mistral [INST]: no generation prompt at all; the system prompt is folded into the first user turn.
MISTRAL = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] + '\\n\\n' %}{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.first %}{{- '[INST] ' + system_message + message['content'] + ' [/INST]' }}"
    "{%- else %}{{- '[INST] ' + message['content'] + ' [/INST]' }}{%- endif %}"
    "{%- else %}{% generation %}{{- ' ' + message['content'] + eos_token }}{% endgeneration %}"
    "{%- endif %}"
    "{%- endfor %}"
)

# Qwen2.5 <|im_start|>: a default system prompt, and a newline after each <|im_end|> (not generated).
QWEN25 = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

MARKED_TEMPLATES = {"llama3": LLAMA3, "llama31": LLAMA31, "mistral": MISTRAL, "qwen25": QWEN25}

_MARKER_RE = re.compile(r"{%-?\s*(end)?generation\s*-?%}")


def has_generation_markers(template: str) -> bool:
    return bool(_MARKER_RE.search(template))


def strip_generation_markers(template: str) -> str:
    """The same template without `{% generation %}`/`{% endgeneration %}` (same rendered text)."""
    return _MARKER_RE.sub("", template)
