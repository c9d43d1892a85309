"""Model configuration: one dataclass for every supported family, built from a Hugging Face
``config.json``. Families differ only by flags (biases, rope scaling, sliding window, tied
embeddings); anything the model cannot reproduce exactly is rejected with the option's name.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from etils.epath import Path

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
ROPE_TYPES = ("default", "linear", "llama3")
ATTENTION_IMPLS = ("auto", "xla", "cudnn", "pallas_gpu", "splash")  # auto: attention_auto.choose_attention
REMAT_POLICIES = ("none", "full", "save_dots")
DTYPES = ("float32", "bfloat16", "float16")

# config.json keys whose presence with a non-trivial value means a feature this model lacks.
_UNSUPPORTED_KEYS = ("quantization_config", "moe_intermediate_size", "num_experts", "num_local_experts")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture (from config.json) and run-time options (dtype, attention, remat, scan).

    Frozen and hashable: it is static data of the model graph, so a change of any field
    retraces jitted functions instead of silently reusing a stale compilation.
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position: int = 8192
    max_position_embeddings: int = 8192
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    sliding_window: int | None = None
    initializer_range: float = 0.02
    bos_token_id: int | tuple[int, ...] | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    # run-time options: never change the parameters, only how they are used
    dtype: str = "bfloat16"  # compute dtype; parameters stay float32
    param_dtype: str = "float32"
    attention: str = "auto"  # CPU: always the blockwise XLA path
    remat: str = "none"
    scan_layers: bool = False

    def __post_init__(self):
        problems = []
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            problems.append(f"model_type {self.model_type!r} is not supported "
                            f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim"):
            if int(getattr(self, name)) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_kv_heads > 0 and self.num_heads % self.num_kv_heads:
            problems.append(f"num_attention_heads={self.num_heads} is not a multiple of "
                            f"num_key_value_heads={self.num_kv_heads}")
        if self.rope_type not in ROPE_TYPES:
            problems.append(f"rope type {self.rope_type!r} is not supported (supported: {', '.join(ROPE_TYPES)})")
        if self.head_dim % 2:
            problems.append(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        for name, allowed in (("dtype", DTYPES), ("param_dtype", DTYPES), ("attention", ATTENTION_IMPLS),
                              ("remat", REMAT_POLICIES)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name}={getattr(self, name)!r}; expected one of {', '.join(allowed)}")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    # --- Hugging Face config.json -------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any], source: str = "config.json", **options: Any) -> "ModelConfig":
        """Build from a parsed config.json; ``options`` set the run-time fields."""
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"{source}: unsupported model_type {model_type!r} "
                             f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if k not in hf]
        if missing:
            raise ValueError(f"{source}: missing required key(s) {', '.join(missing)}")
        for key in _UNSUPPORTED_KEYS:
            if hf.get(key):
                raise ValueError(f"{source}: {key} is not supported by atlas-jax")
        act = hf.get("hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise ValueError(f"{source}: hidden_act {act!r} is not supported (only silu)")
        heads = int(hf["num_attention_heads"])
        head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
        fields: dict[str, Any] = dict(
            model_type=model_type,
            vocab_size=int(hf["vocab_size"]),
            hidden_size=int(hf["hidden_size"]),
            intermediate_size=int(hf["intermediate_size"]),
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or heads),
            head_dim=int(head_dim),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=int(hf.get("max_position_embeddings", 8192)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            initializer_range=float(hf.get("initializer_range", 0.02)),
            bos_token_id=_token_id(hf.get("bos_token_id")),
            eos_token_id=_token_id(hf.get("eos_token_id")),
            pad_token_id=hf.get("pad_token_id"),
        )
        fields.update(_rope_fields(hf, source))
        if model_type == "llama":
            bias = bool(hf.get("attention_bias", False))
            fields.update(qkv_bias=bias, o_bias=bias, mlp_bias=bool(hf.get("mlp_bias", False)))
        elif model_type == "qwen2":
            # Qwen2 always has q/k/v biases and no o_proj / MLP bias.
            fields.update(qkv_bias=True)
            layer_types = hf.get("layer_types") or []
            if hf.get("use_sliding_window") or any(t != "full_attention" for t in layer_types):
                raise ValueError(f"{source}: Qwen2 per-layer sliding-window attention (use_sliding_window / "
                                 f"layer_types) is not supported")
        elif model_type == "mistral":
            window = hf.get("sliding_window")
            fields.update(sliding_window=int(window) if window else None)
        fields.update(options)
        return cls(**fields)

    @classmethod
    def from_hf_dir(cls, hf_dir: str | Path, **options: Any) -> "ModelConfig":
        path = Path(hf_dir) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no config.json in the Hugging Face directory {hf_dir}")
        try:
            hf = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        return cls.from_hf_dict(hf, source=str(path), **options)

    def to_hf_dict(self) -> dict[str, Any]:
        """A config.json that transformers loads into the same architecture."""
        rope: dict[str, Any] = {"rope_type": self.rope_type, "rope_theta": self.rope_theta}
        if self.rope_type in ("linear", "llama3"):
            rope["factor"] = self.rope_factor
        if self.rope_type == "llama3":
            rope.update(low_freq_factor=self.rope_low_freq_factor, high_freq_factor=self.rope_high_freq_factor,
                        original_max_position_embeddings=self.rope_original_max_position)
        hf: dict[str, Any] = {
            "architectures": [ARCHITECTURES[self.model_type]],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "initializer_range": self.initializer_range,
            "bos_token_id": _json_token_id(self.bos_token_id),
            "eos_token_id": _json_token_id(self.eos_token_id),
            "pad_token_id": self.pad_token_id,
            # both spellings: transformers 5 reads rope_parameters, 4.x reads rope_theta/rope_scaling
            "rope_parameters": rope,
            "rope_theta": self.rope_theta,
            "rope_scaling": None if self.rope_type == "default" else dict(rope),
            "torch_dtype": "float32" if self.param_dtype == "float32" else self.param_dtype,
        }
        if self.model_type == "llama":
            hf.update(attention_bias=self.qkv_bias, mlp_bias=self.mlp_bias)
        elif self.model_type == "qwen2":
            hf.update(use_sliding_window=False, sliding_window=None,
                      layer_types=["full_attention"] * self.num_layers)
        elif self.model_type == "mistral":
            hf.update(sliding_window=self.sliding_window)
        return hf

    # --- atlas-jax's own JSON (stored beside checkpoints) ---------------------------------
    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "model_config.json", **options: Any) -> "ModelConfig":
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown model config key(s) {', '.join(unknown)}")
        for key in ("bos_token_id", "eos_token_id"):
            data[key] = _token_id(data.get(key))
        data.update(options)
        return cls(**data)

    def num_params(self) -> int:
        e, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        attn = e * self.head_dim * (2 * self.num_heads + 2 * self.num_kv_heads)
        per_layer = attn + 3 * e * f + 2 * e
        return self.num_layers * per_layer + v * e * (1 if self.tie_word_embeddings else 2) + e


def _rope_fields(hf: dict[str, Any], source: str) -> dict[str, Any]:
    # transformers 5 writes rope_parameters; 4.x wrote rope_theta + rope_scaling.
    params = dict(hf.get("rope_parameters") or {})
    scaling = hf.get("rope_scaling") or {}
    if not params:
        params = dict(scaling)
        params.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
    rope_type = params.get("rope_type") or params.get("type") or "default"
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"{source}: rope scaling type {rope_type!r} is not supported "
                         f"(supported: {', '.join(ROPE_TYPES)})")
    fields: dict[str, Any] = {"rope_type": rope_type, "rope_theta": float(params.get("rope_theta", 10000.0))}
    if rope_type in ("linear", "llama3"):
        fields["rope_factor"] = float(params["factor"])
    if rope_type == "llama3":
        fields.update(rope_low_freq_factor=float(params["low_freq_factor"]),
                      rope_high_freq_factor=float(params["high_freq_factor"]),
                      rope_original_max_position=int(params["original_max_position_embeddings"]))
    if not math.isfinite(fields["rope_theta"]) or fields["rope_theta"] <= 0:
        raise ValueError(f"{source}: rope_theta must be a positive number, got {fields['rope_theta']}")
    return fields


def _token_id(value: Any) -> int | tuple[int, ...] | None:
    if isinstance(value, list):
        return tuple(int(v) for v in value)
    return value


def _json_token_id(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
