"""Typed model configuration and the named presets.

Two architecture families share one config type:

* ``gpt2``: learned absolute positions, pre-LayerNorm, GELU MLP (d_ff = 4·d_model),
  biases everywhere, input embedding tied to the output head.
* ``modern``: RoPE, RMSNorm, SwiGLU MLP, no biases, untied output head,
  optional grouped-query attention (``n_kv_head`` < ``n_head``).

Field names (``n_layer``, ``d_model``, ``n_head``, ``n_kv_head``, ``d_ff``,
``n_ctx``, ``vocab_size``) are a contract: ``--set key=value`` uses them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from scalinglab.errors import UserError

FAMILIES = ("gpt2", "modern")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Decoder-only transformer hyper-parameters (sizes in units of vector elements)."""

    family: str = "gpt2"
    n_layer: int = 12
    d_model: int = 768
    n_head: int = 12
    n_kv_head: int = 0  # 0 → same as n_head (multi-head attention)
    d_ff: int = 0  # 0 → family default (4·d_model for gpt2, SwiGLU 8/3·d_model rounded for modern)
    n_ctx: int = 1024  # maximum sequence length in tokens
    vocab_size: int = 50257
    tie_embeddings: bool | None = None  # None → family default (gpt2 tied, modern untied)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    # μP base width (d_model of the model whose lr is transferred; see scalinglab.models.mup); 0 → standard
    mup_base_width: int = 0

    def __post_init__(self) -> None:
        validate(self)  # every ModelConfig (presets, --set, replace, from_dict) is buildable

    # ---- derived, family-dependent properties -------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def ff_dim(self) -> int:
        if self.d_ff:
            return self.d_ff
        if self.family == "gpt2":
            return 4 * self.d_model
        return swiglu_hidden(self.d_model)

    @property
    def tied(self) -> bool:
        if self.tie_embeddings is None:
            return self.family == "gpt2"
        return bool(self.tie_embeddings)

    @property
    def use_bias(self) -> bool:
        return self.family == "gpt2"

    @property
    def learned_positions(self) -> bool:
        return self.family == "gpt2"

    def resolved(self) -> ModelConfig:
        """The same config with every family default written out explicitly."""
        return dataclasses.replace(self, n_kv_head=self.kv_heads, d_ff=self.ff_dim, tie_embeddings=self.tied)

    def to_dict(self) -> dict[str, Any]:
        """Every field, family defaults resolved; ``mup_base_width`` only when μP is on, so the
        config of a standard-parameterisation model reads exactly as before μP existed."""
        d = dataclasses.asdict(self.resolved())
        if not d["mup_base_width"]:
            del d["mup_base_width"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def swiglu_hidden(d_model: int, multiple_of: int = 64) -> int:
    """LLaMA's SwiGLU width: 8/3·d_model rounded up to a multiple of ``multiple_of``."""
    hidden = (8 * d_model + 2) // 3
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def validate(cfg: ModelConfig) -> ModelConfig:
    """Return ``cfg`` if it describes a buildable model, else raise UserError (run by ``__post_init__``)."""
    from scalinglab.checks import check_field_types

    check_field_types(cfg, "model")
    if cfg.family not in FAMILIES:
        raise UserError(f"unknown family {cfg.family!r}; choose one of {', '.join(FAMILIES)}")
    for name in ("n_layer", "d_model", "n_head", "n_ctx", "vocab_size"):
        if getattr(cfg, name) <= 0:
            raise UserError(f"{name} must be positive, got {getattr(cfg, name)}")
    for name in ("n_kv_head", "d_ff"):
        if getattr(cfg, name) < 0:
            raise UserError(f"{name} must be positive (or 0 for the default), got {getattr(cfg, name)}")
    for name in ("norm_eps", "init_std", "rope_theta"):
        if not getattr(cfg, name) > 0:
            raise UserError(f"{name} must be positive, got {getattr(cfg, name)}")
    if cfg.d_model % cfg.n_head:
        raise UserError(f"n_head={cfg.n_head} does not divide d_model={cfg.d_model}")
    if cfg.n_head % cfg.kv_heads:
        raise UserError(f"n_kv_head={cfg.kv_heads} does not divide n_head={cfg.n_head}")
    if cfg.family == "gpt2" and cfg.kv_heads != cfg.n_head:
        raise UserError("grouped-query attention (n_kv_head < n_head) is only in the modern family")
    if cfg.mup_base_width < 0:
        raise UserError(f"mup_base_width must be positive (or 0: no μP), got {cfg.mup_base_width}")
    if cfg.mup_base_width and (cfg.family != "modern" or cfg.tied):
        raise UserError(
            f"μP (mup_base_width) is implemented for the modern family with an untied head only, not {cfg.family}"
            + (" with tied embeddings" if cfg.family == "modern" else "")
        )
    if cfg.family == "modern" and cfg.head_dim % 2:
        raise UserError(f"RoPE needs an even head_dim, got d_model/n_head={cfg.head_dim}")
    return cfg


def _gpt2(n_layer: int, d_model: int, n_head: int, n_ctx: int = 1024, vocab: int = 50257) -> ModelConfig:
    return ModelConfig("gpt2", n_layer, d_model, n_head, n_ctx=n_ctx, vocab_size=vocab)


def _modern(n_layer: int, d_model: int, n_head: int, n_kv: int, n_ctx: int = 2048, vocab: int = 32000) -> ModelConfig:
    return ModelConfig("modern", n_layer, d_model, n_head, n_kv_head=n_kv, n_ctx=n_ctx, vocab_size=vocab)


# Byte-level presets use vocab 257 (256 bytes + 1 document separator), see scalinglab.data.
BYTE_VOCAB = 257

PRESETS: dict[str, ModelConfig] = {
    # GPT-2 (Radford et al. 2019); gpt2-small has exactly 124,439,808 parameters.
    "gpt2-small": _gpt2(12, 768, 12),
    "gpt2-medium": _gpt2(24, 1024, 16),
    "gpt2-large": _gpt2(36, 1280, 20),
    "gpt2-xl": _gpt2(48, 1600, 25),
    # CPU-sized GPT-2-architecture models on the byte-level default corpus.
    "gpt2-tiny": _gpt2(2, 64, 4, n_ctx=256, vocab=BYTE_VOCAB),
    "gpt2-mini": _gpt2(4, 128, 4, n_ctx=256, vocab=BYTE_VOCAB),
    # Modern (LLaMA-style) family; GQA with 4 query heads per kv head where sizes allow.
    "modern-tiny": _modern(2, 64, 4, 2, n_ctx=256, vocab=BYTE_VOCAB),
    "modern-mini": _modern(4, 128, 4, 2, n_ctx=256, vocab=BYTE_VOCAB),
    "modern-small": _modern(12, 768, 12, 4),
    "modern-medium": _modern(24, 1024, 16, 4),
    "modern-large": _modern(24, 2048, 16, 4),
}


def _coerce(field: dataclasses.Field, raw: str) -> Any:
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("bool"):
            low = raw.lower()
            if low in ("none", "default", ""):
                return None
            if low in ("1", "true", "yes"):
                return True
            if low in ("0", "false", "no"):
                return False
            raise ValueError(raw)
    except ValueError:
        raise UserError(f"--set {field.name}={raw}: expected {kind.split(' ')[0]}") from None
    return raw


def typed_overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``overrides`` with every text value converted to its ModelConfig field's declared type
    (``{"n_layer": "1"}`` → ``{"n_layer": 1}``); values that are not text are kept as given.
    UserError (one line) for an unknown field or a text that is not of the field's type."""
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    out: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if key not in fields:
            raise UserError(f"unknown model field {key!r} in --set; fields: {', '.join(fields)}")
        out[key] = _coerce(fields[key], value) if isinstance(value, str) else value
    return out


def parse_model_set(items: Sequence[str] | None) -> dict[str, Any]:
    """Repeated ``--set key=value`` model overrides, each value in its field's declared type: the one
    parser of every command that takes ``--set`` (train, batch-sweep, aot, params, flops)."""
    from scalinglab.cli import parse_set

    return typed_overrides(parse_set(items))


def get_config(preset: str, overrides: Mapping[str, Any] | None = None) -> ModelConfig:
    """Look up a preset and apply ``overrides`` (raw strings from ``--set`` or typed values)."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[preset], **typed_overrides(overrides))
