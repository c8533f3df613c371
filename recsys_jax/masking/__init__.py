"""RecSysLLM batch construction: GLM blank infilling with entity-aware masking.

TokenizedExample --mask_example--> one masked example (1-D arrays) --pad_batch/pack_batch-->
fixed-shape batch for the model. `sample_spans` decides what to hide (random), `mask_spans`
lays it out (deterministic, so tests can hand-pick the spans).
"""

from __future__ import annotations

import numpy as np

from recsys_jax.example import SpecialIds, TokenizedExample
from recsys_jax.masking.batching import BATCH_KEYS, attention_allowed, pack_batch, pad_batch
from recsys_jax.masking.config import MASK_KINDS, MaskingConfig
from recsys_jax.masking.layout import FIELDS, mask_spans, mask_token, masked_length
from recsys_jax.masking.sampling import sample_spans, target_mask_kind

__all__ = [
    "BATCH_KEYS",
    "FIELDS",
    "MASK_KINDS",
    "MaskingConfig",
    "attention_allowed",
    "mask_example",
    "mask_spans",
    "mask_token",
    "masked_length",
    "pack_batch",
    "pad_batch",
    "sample_spans",
    "target_mask_kind",
]


def mask_example(
    example: TokenizedExample, special: SpecialIds, cfg: MaskingConfig, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Samples spans, orders Part B (text order, or shuffled for the GLM ablation), lays out."""
    spans, kinds = sample_spans(example, cfg, rng)
    order = np.arange(len(spans)) if cfg.keep_span_order else rng.permutation(len(spans))
    return mask_spans(example, [spans[i] for i in order], [kinds[i] for i in order], special, cfg)
