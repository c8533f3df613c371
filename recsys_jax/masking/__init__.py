"""RecSysLLM batch construction: GLM blank infilling with entity-aware masking.

TokenizedExample --sample_example--> SampledExample (ids + chosen spans, per record)
--pad_batch/pack_batch--> fixed-shape batch for the model, laid out for the whole batch at
once. `sample_spans` decides what to hide (random), `mask_spans` / `lay_out_one` lay out one
example (deterministic, so tests can hand-pick the spans; decoding uses it for prompts).
"""

from __future__ import annotations

import numpy as np

from recsys_jax.example import SpecialIds, TokenizedExample
from recsys_jax.masking.batching import BATCH_KEYS, attention_allowed, pack_batch, pad_batch
from recsys_jax.masking.config import MASK_KINDS, MaskingConfig
from recsys_jax.masking.layout import FIELDS, lay_out_one, mask_spans
from recsys_jax.masking.sampled import (
    SampledExample,
    mask_token,
    masked_length,
    sampled_example,
)
from recsys_jax.masking.sampling import sample_spans, target_mask_kind

__all__ = [
    "BATCH_KEYS",
    "FIELDS",
    "MASK_KINDS",
    "MaskingConfig",
    "SampledExample",
    "attention_allowed",
    "lay_out_one",
    "mask_example",
    "mask_spans",
    "mask_token",
    "masked_length",
    "pack_batch",
    "pad_batch",
    "sample_example",
    "sample_spans",
    "target_mask_kind",
]


def sample_example(
    example: TokenizedExample, special: SpecialIds, cfg: MaskingConfig, rng: np.random.Generator
) -> SampledExample:
    """Samples spans and orders Part B (text order, or shuffled for the GLM ablation)."""
    spans, kinds = sample_spans(example, cfg, rng)
    order = np.arange(len(spans)) if cfg.keep_span_order else rng.permutation(len(spans))
    return sampled_example(
        example, [spans[i] for i in order], [kinds[i] for i in order], special, cfg, sampled=True
    )


def mask_example(
    example: TokenizedExample, special: SpecialIds, cfg: MaskingConfig, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """One example sampled and laid out: 1-D arrays (`FIELDS`)."""
    return lay_out_one(sample_example(example, special, cfg, rng), special)
