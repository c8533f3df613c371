"""The GLM model: config and presets, the NNX transformer with its KV cache, LoRA adapters."""

from recsys_jax.model.config import LORA_TARGETS, MODEL_PRESETS, ModelConfig
from recsys_jax.model.glm import GLM, attention_mask, fold_item_features, param_count
from recsys_jax.model.lora import BASE_PARAMS, LoRA, LoRAParam, merge_lora

__all__ = [
    "BASE_PARAMS",
    "GLM",
    "LORA_TARGETS",
    "LoRA",
    "LoRAParam",
    "MODEL_PRESETS",
    "ModelConfig",
    "attention_mask",
    "fold_item_features",
    "merge_lora",
    "param_count",
]
