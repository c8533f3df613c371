"""GLM model hyper-parameters and the named presets.

A frozen (hashable) dataclass, so it can sit on an NNX module as static data and be used as a
`jax.jit` static argument. Change a preset with `dataclasses.replace(MODEL_PRESETS["tiny"], ...)`.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

# The four matrices LoRA may adapt, named as in the public GLM checkpoints (docs/design.md,
# RecSysLLM's three changes).
LORA_TARGETS = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 32000
    num_layers: int = 2
    num_heads: int = 4
    hidden_size: int = 128
    mlp_dim: int | None = None  # None -> 4 * hidden_size (see `ffn_dim`)
    max_positions: int = 512
    max_block_positions: int = 512
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    dtype: str = "float32"  # compute dtype; parameters are always float32
    remat: bool = False  # recompute each block in the backward pass (memory: one block's)
    lora_rank: int = 0  # 0 = no adapters
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = LORA_TARGETS
    # > 0: every token row also gets frozen pretrained vectors of this width through a learned
    # projection (item embeddings from a text encoder; set from data.item_features).
    item_feature_dim: int = 0

    def __post_init__(self):
        # YAML/CLI give lists; a tuple keeps the config hashable.
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))

    @property
    def ffn_dim(self) -> int:
        """MLP inner width. Resolved lazily so `dataclasses.replace(hidden_size=...)` follows."""
        return self.mlp_dim if self.mlp_dim is not None else 4 * self.hidden_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def compute_dtype(self):
        return _DTYPES[self.dtype]

    def validate(self) -> ModelConfig:
        """Raises ValueError naming the offending field; returns self so calls can chain."""
        for name in (
            "vocab_size",
            "num_layers",
            "num_heads",
            "hidden_size",
            "max_positions",
            "max_block_positions",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"ModelConfig.hidden_size={self.hidden_size} is not divisible by "
                f"num_heads={self.num_heads}"
            )
        if self.ffn_dim < 1:
            raise ValueError(f"ModelConfig.mlp_dim must be >= 1, got {self.mlp_dim}")
        if self.dtype not in _DTYPES:
            raise ValueError(
                f"ModelConfig.dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}"
            )
        for name in ("dropout_rate", "attention_dropout_rate", "lora_dropout"):
            rate = getattr(self, name)
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"ModelConfig.{name} must be in [0, 1), got {rate}")
        if self.item_feature_dim < 0:
            raise ValueError(
                f"ModelConfig.item_feature_dim must be >= 0 (0 = off), got {self.item_feature_dim}"
            )
        if self.lora_rank < 0:
            raise ValueError(f"ModelConfig.lora_rank must be >= 0 (0 = off), got {self.lora_rank}")
        if self.lora_rank and self.lora_alpha <= 0:
            raise ValueError(f"ModelConfig.lora_alpha must be > 0, got {self.lora_alpha}")
        unknown = sorted(set(self.lora_targets) - set(LORA_TARGETS))
        if unknown:
            raise ValueError(
                f"ModelConfig.lora_targets has unknown names {unknown}; choose from {LORA_TARGETS}"
            )
        return self


# Widths follow P5 (T5-small / T5-base). P5 is an encoder-decoder whose decoder layers also
# carry cross-attention; a decoder-only GLM needs more layers (14 / 28) to spend the same
# parameter budget (~60 M / ~220 M with a 32k vocabulary).
MODEL_PRESETS: dict[str, ModelConfig] = {
    # CPU CI: trains in minutes on 2 cores.
    "tiny": ModelConfig(
        vocab_size=32000,
        num_layers=2,
        num_heads=4,
        hidden_size=128,
        mlp_dim=512,
        max_positions=512,
        max_block_positions=512,
    ),
    "small": ModelConfig(
        vocab_size=32000,
        num_layers=14,
        num_heads=8,
        hidden_size=512,
        mlp_dim=2048,
        max_positions=512,
        max_block_positions=512,
    ),
    "base": ModelConfig(
        vocab_size=32000,
        num_layers=28,
        num_heads=12,
        hidden_size=768,
        mlp_dim=3072,
        max_positions=512,
        max_block_positions=512,
    ),
    # GLM-10B (Du et al. 2022), for shape/sharding checks and checkpoint import.
    "glm_10b": ModelConfig(
        vocab_size=50304,
        num_layers=48,
        num_heads=64,
        hidden_size=4096,
        mlp_dim=16384,
        max_positions=1024,
        max_block_positions=1024,
        dtype="bfloat16",
    ),
}
