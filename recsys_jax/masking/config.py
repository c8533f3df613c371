"""How an example is corrupted for GLM blank infilling (docs/design.md: GLM, RecSysLLM's three
changes).

The three booleans switch RecSysLLM's designs off one at a time, for ablations against GLM.
"""

from __future__ import annotations

import dataclasses

MASK_KINDS = ("mask", "smask", "gmask")


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    # Free-text examples: share of tokens hidden by [MASK] / [sMASK] spans (GLM: 15%).
    mask_ratio: float = 0.15
    # GLM draws free-token span lengths from Poisson(lambda=3).
    poisson_lambda: float = 3.0
    # Free-text examples: probability of each objective, in MASK_KINDS order.
    kind_probs: tuple[float, float, float] = (0.6, 0.2, 0.2)
    # [gMASK] hides one span at the end covering this fraction of the text (GLM: 0.5-1.0).
    gmask_min: float = 0.5
    gmask_max: float = 1.0
    # Task examples: chance that each non-target entity is masked too (more infilling signal).
    extra_entity_mask_prob: float = 0.0
    # RecSysLLM: spans never split an entity. False = GLM spans (ablation).
    entity_aware: bool = True
    # RecSysLLM: Part B keeps spans in text order. False = GLM's shuffle (ablation).
    keep_span_order: bool = True
    # RecSysLLM: unmasked entities get intra ids 1..len in Part A. False = GLM's zeros (ablation).
    entity_positions: bool = True
    # Longest masked example (Part A + Part B); GLM-10B has 1024 positions.
    max_length: int = 1024

    def __post_init__(self):
        if not 0.0 < self.mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1], got {self.mask_ratio}")
        if self.poisson_lambda <= 0:
            raise ValueError(f"poisson_lambda must be > 0, got {self.poisson_lambda}")
        probs = tuple(self.kind_probs)
        if len(probs) != len(MASK_KINDS) or min(probs) < 0 or abs(sum(probs) - 1.0) > 1e-6:
            raise ValueError(
                f"kind_probs must be 3 non-negative numbers for {MASK_KINDS} summing to 1, "
                f"got {self.kind_probs}"
            )
        if not 0.0 < self.gmask_min <= self.gmask_max <= 1.0:
            raise ValueError(
                f"need 0 < gmask_min <= gmask_max <= 1, got {self.gmask_min}, {self.gmask_max}"
            )
        if not 0.0 <= self.extra_entity_mask_prob <= 1.0:
            raise ValueError(
                f"extra_entity_mask_prob must be in [0, 1], got {self.extra_entity_mask_prob}"
            )
        if self.max_length < 3:
            raise ValueError(
                f"max_length must be >= 3 (one token, its mask, <sop>, <eop>), "
                f"got {self.max_length}"
            )
