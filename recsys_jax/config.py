"""The training config: one dataclass tree, YAML files in `configs/`, `key=value` overrides.

Each module owns its section's class (ModelConfig beside the model, MaskingConfig beside the
masking); this file adds the data, training and mesh sections and assembles the tree.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from recsys_jax import configlib
from recsys_jax.masking import MaskingConfig
from recsys_jax.model.config import ModelConfig

FAMILIES = ("sequential", "direct", "rating", "explanation", "review")


def _default_weights() -> dict:
    # Per-example sampling ratios of the multitask mixture (P5: ratios matter). Families the
    # data cannot support are skipped with a message; "sequence_text" is RecSysLLM's plain
    # behaviour-sequence infilling (entity-aware [MASK]/[gMASK], no prompt); "item_sequence"
    # is the bare item sequence (no words) under `data.sequence_objective`.
    return {"sequential": 1.0, "direct": 0.5, "rating": 0.5, "explanation": 0.5, "review": 0.5,
            "sequence_text": 0.3}


@dataclasses.dataclass
class DataConfig:
    dataset: str = "amazon_beauty"  # name of the prepared dataset under data_dir
    format: str = "embedded"  # embedded | p5 | movielens | csv | amazon_json
    path: Optional[str] = None  # source folder/file for non-embedded formats
    data_dir: str = "data_prepared"  # where `recsys_jax.data.prepare` writes; prepared on demand
    index: str = "title"  # title | random_id | item_token | semantic_id
    index_options: dict = dataclasses.field(default_factory=dict)
    vocab_size: int = 8000  # SentencePiece pieces (special and item tokens come on top)
    seq_len: int = 256  # tokens per row after masking; also the prompt budget
    max_history: int = 20  # most recent items shown in a prompt
    # item_sequence family: causal (a next-item loss at every item) | infill (last item masked)
    sequence_objective: str = "causal"
    train_candidates: int = 20  # listed by pick-from-candidates prompts in training
    family_weights: dict = dataclasses.field(default_factory=_default_weights)
    pack: bool = True  # several examples per row (segment ids keep them apart)
    valid_users: int = 512  # validation-loss cases (first users, fixed)
    seed: int = 0
    workers: int = 0  # batch-building processes (0: threads); raise on GPU/TPU hosts
    # item_token index only: initialise item rows from pretrained item vectors through a
    # learned projection — "encoder" (bundled all-MiniLM-L6-v2) or a .npy (scripts/embed_items.py)
    item_features: Optional[str] = None

    def validate(self):
        if self.index not in ("title", "random_id", "item_token", "semantic_id"):
            raise configlib.ConfigError(f"data.index={self.index!r}: choose title, random_id, "
                                        "item_token or semantic_id")
        unknown = set(self.family_weights) - set(FAMILIES) - {"sequence_text", "item_sequence"}
        if unknown:
            raise configlib.ConfigError(f"data.family_weights: unknown families {sorted(unknown)}")
        if self.seq_len < 32:
            raise configlib.ConfigError("data.seq_len must be at least 32")
        if self.item_features is not None and self.index != "item_token":
            raise configlib.ConfigError(
                f"data.item_features needs data.index=item_token (one token per item), not "
                f"{self.index!r}; for semantic ids use index_options embedding: encoder")
        if self.sequence_objective not in ("causal", "infill"):
            raise configlib.ConfigError(f"data.sequence_objective={self.sequence_objective!r}: "
                                        "choose causal or infill")
        if self.workers < 0:
            raise configlib.ConfigError(f"data.workers={self.workers}: use 0 (threads) or more")


@dataclasses.dataclass
class TrainConfig:
    run_dir: str = "runs/default"
    steps: int = 3000
    batch_size: int = 32  # rows per optimizer step (across all devices)
    grad_accum: int = 1  # micro-batches per step; batch_size must divide by it
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    end_lr_ratio: float = 0.1  # cosine decays to learning_rate * this
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.98
    grad_clip: float = 1.0
    lora_only: bool = False  # train only LoRA adapters (needs model.lora_rank > 0)
    init_from: Optional[str] = None  # a run dir / checkpoint to start from (params + assets)
    log_every: int = 10
    eval_every: int = 100
    checkpoint_every: int = 200
    keep_checkpoints: int = 3  # most recent kept, plus the best by validation loss
    async_checkpoint: bool = True
    plot: bool = True
    seed: int = 0
    # Logits (vocabulary x hidden per position) only at loss positions, up to this share of
    # the batch's positions (Beauty: ~10 % carry loss, at most 13 %); a batch with more
    # computes them everywhere (same loss; the first log window says when most batches do,
    # e.g. with masking.extra_entity_mask_prob > 0). 1 = always everywhere.
    logits_fraction: float = 0.25
    # Stop early, with a validation pass and a checkpoint, once the loop has run this long
    # (a fixed slot on a shared accelerator); rerunning the same run_dir resumes.
    time_limit_minutes: Optional[float] = None
    # Also rank the catalog for this many validation users at every validation (full
    # ranking, history excluded; -1 = all, 0 = off): logs valid HR/NDCG@10 and keeps the best
    # checkpoint by validation NDCG@10 instead of by validation loss.
    valid_ranking_users: int = 0

    def validate(self):
        if not 0 < self.logits_fraction <= 1:
            raise configlib.ConfigError(f"train.logits_fraction={self.logits_fraction} must be "
                                        "in (0, 1] (1 = logits at every position)")
        if self.time_limit_minutes is not None and self.time_limit_minutes <= 0:
            raise configlib.ConfigError("train.time_limit_minutes must be positive (or unset)")
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise configlib.ConfigError("train.steps, train.batch_size and train.grad_accum must "
                                        "be positive")
        if self.batch_size % self.grad_accum:
            raise configlib.ConfigError(f"train.batch_size={self.batch_size} must be divisible by "
                                        f"train.grad_accum={self.grad_accum}")


@dataclasses.dataclass
class MeshConfig:
    data: int = -1  # -1: all devices not used by fsdp/tensor
    fsdp: int = 1
    tensor: int = 1


@dataclasses.dataclass
class Config:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    masking: MaskingConfig = dataclasses.field(default_factory=MaskingConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)

    def validate(self):
        self.data.validate()
        self.train.validate()
        self.model.validate()
        if self.data.seq_len > self.model.max_positions:
            raise configlib.ConfigError(
                f"data.seq_len={self.data.seq_len} exceeds model.max_positions="
                f"{self.model.max_positions}; lower the first or raise the second")
        if self.train.lora_only and self.model.lora_rank <= 0:
            raise configlib.ConfigError("train.lora_only=true needs model.lora_rank > 0")


def load_config(path: str | None = None, overrides=()) -> Config:
    return configlib.load(Config, path, overrides)
