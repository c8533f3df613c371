"""The training config: one dataclass tree, YAML files in `configs/`, `key=value` overrides.

Each module owns its section's class (ModelConfig beside the model, MaskingConfig beside the
masking); this file adds the data, training and mesh sections and assembles the tree.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from recsys_jax import configlib
from recsys_jax.masking import MaskingConfig
from recsys_jax.model.config import ModelConfig
from recsys_jax.prompts.families import TRAINING_FAMILIES
from recsys_jax.prompts.mixture import WINDOW_ENDS

# The built-in defaults are the Beauty recipe (configs/beauty.yaml, docs/results.md): the bare
# item sequence with a next-item loss at every item, item_token index, a 2 x 64 GLM with
# SASRec's dropout, about 3 minutes on a 2-core CPU. The multitask mixture and RecSysLLM's
# entity-granular positions are options (configs/tiny.yaml, configs/experiments/).
DEFAULT_MODEL = ModelConfig(
    num_layers=2,
    num_heads=1,
    hidden_size=64,
    mlp_dim=256,
    max_positions=64,
    max_block_positions=64,
    dropout_rate=0.5,
    attention_dropout_rate=0.5,
)
DEFAULT_MASKING = MaskingConfig(entity_positions=False)


@dataclasses.dataclass
class DataConfig:
    dataset: str = "amazon_beauty"  # name of the prepared dataset under data_dir
    format: str = "embedded"  # embedded | p5 | movielens | csv | amazon_json
    path: str | None = None  # source folder/file for non-embedded formats
    data_dir: str = "data_prepared"  # where `recsys_jax.data.prepare` writes; prepared on demand
    index: str = "item_token"  # title | random_id | item_token | semantic_id
    index_options: dict = dataclasses.field(default_factory=dict)
    vocab_size: int = 1000  # SentencePiece pieces (special and item tokens come on top)
    seq_len: int = 64  # tokens per row after masking; also the prompt budget
    max_history: int = 50  # most recent items shown in a prompt
    # item_sequence family: causal (a next-item loss at every item) | infill (last item masked)
    sequence_objective: str = "causal"
    # item_sequence windows over histories longer than max_history + 1: "uniform" = the window
    # end uniform over the sequence (the most recent items are seldom targets: the last one only
    # when the end is the last item); "even" = every item past the first window, the most
    # recent included, is a target equally often, as when a sequence is tiled from its end.
    window_ends: str = "uniform"
    train_candidates: int = 20  # listed by pick-from-candidates prompts in training
    # Per-example sampling ratios of the task families (P5: ratios matter); families the data
    # cannot support are skipped with a message. "item_sequence": the bare item sequence under
    # `sequence_objective`; "sequence_text": RecSysLLM's behaviour-text infilling (no prompt);
    # the rest are P5-style worded prompts (configs/tiny.yaml has the multitask mixture).
    family_weights: dict = dataclasses.field(default_factory=lambda: {"item_sequence": 1.0})
    pack: bool = True  # several examples per row (segment ids keep them apart)
    valid_users: int = 512  # validation-loss cases (first users, fixed)
    seed: int = 0
    workers: int = 0  # batch-building processes (0: threads); raise on GPU/TPU hosts
    # item_token index only: initialise item rows from pretrained item vectors through a
    # learned projection — "encoder" (bundled all-MiniLM-L6-v2) or a .npy (scripts/embed_items.py)
    item_features: str | None = None

    def validate(self):
        from recsys_jax.indexing import INDEX_KINDS  # the index classes name themselves

        if self.index not in INDEX_KINDS:
            raise configlib.ConfigError(
                f"data.index={self.index!r}: choose one of {', '.join(INDEX_KINDS)}"
            )
        unknown = set(self.family_weights) - set(TRAINING_FAMILIES)
        if unknown:
            raise configlib.ConfigError(f"data.family_weights: unknown families {sorted(unknown)}")
        weights = self.family_weights
        bad = {
            k: w
            for k, w in weights.items()
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w)
        }
        if bad:
            raise configlib.ConfigError(f"data.family_weights: weights must be numbers, got {bad}")
        negative = {k: w for k, w in weights.items() if w < 0}
        if negative:
            raise configlib.ConfigError(
                f"data.family_weights: negative weights {negative}; use 0 to leave a family out"
            )
        if not any(w > 0 for w in weights.values()):
            raise configlib.ConfigError(
                f"data.family_weights={weights}: give at least one family a positive weight, "
                "e.g. data.family_weights={item_sequence: 1.0}"
            )
        if self.seq_len < 32:
            raise configlib.ConfigError("data.seq_len must be at least 32")
        if self.item_features is not None and self.index != "item_token":
            raise configlib.ConfigError(
                f"data.item_features needs data.index=item_token (one token per item), not "
                f"{self.index!r}; for semantic ids use index_options embedding: encoder"
            )
        if self.window_ends not in WINDOW_ENDS:
            raise configlib.ConfigError(
                f"data.window_ends={self.window_ends!r}: choose {' or '.join(WINDOW_ENDS)}"
            )
        if self.sequence_objective not in ("causal", "infill"):
            raise configlib.ConfigError(
                f"data.sequence_objective={self.sequence_objective!r}: choose causal or infill"
            )
        if self.workers < 0:
            raise configlib.ConfigError(f"data.workers={self.workers}: use 0 (threads) or more")


@dataclasses.dataclass
class TrainConfig:
    run_dir: str = "runs/default"
    steps: int = 6000
    batch_size: int = 12  # rows per optimizer step (across all devices)
    grad_accum: int = 1  # micro-batches per step; batch_size must divide by it
    learning_rate: float = 1e-3
    warmup_steps: int = 0
    end_lr_ratio: float = 1.0  # cosine decays to learning_rate * this (1 = constant)
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    grad_clip: float | None = None  # global-norm clipping; None = off
    lora_only: bool = False  # train only LoRA adapters (needs model.lora_rank > 0)
    init_from: str | None = None  # a run dir / checkpoint to start from (params + assets)
    log_every: int = 50
    eval_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3  # most recent kept, plus the best by validation loss
    async_checkpoint: bool = True
    plot: bool = True
    seed: int = 0
    # Logits are computed only at loss positions, gathered into a buffer of this share of the
    # batch's positions (prompt recipes on Beauty: ~10 % carry loss, at most 13 %); a batch
    # with more takes a buffer of every position (same loss, a little slower; the first log
    # window says when most batches do, e.g. with masking.extra_entity_mask_prob > 0).
    logits_fraction: float = 1.0
    # Stop early, with a validation pass and a checkpoint, once the loop has run this long
    # (a fixed slot on a shared accelerator); rerunning the same run_dir resumes.
    time_limit_minutes: float | None = None
    # Also rank the catalog for this many validation users at every validation (full
    # ranking, history excluded; -1 = all, 0 = off): logs valid HR/NDCG@10 and keeps the best
    # checkpoint by validation NDCG@10 instead of by validation loss.
    valid_ranking_users: int = -1
    # Stop (exit code 2) after this many consecutive training steps with a non-finite loss or
    # gradient norm, naming the last good checkpoint. Checked when metrics are fetched (every
    # log_every steps) and before each validation and checkpoint; a checkpoint is never saved
    # from a non-finite step or with non-finite validation metrics.
    divergence_patience: int = 1

    def validate(self):
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise configlib.ConfigError(
                f"train.learning_rate={self.learning_rate} must be a positive finite number "
                "(e.g. train.learning_rate=1e-3)"
            )
        for key in (
            "steps",
            "batch_size",
            "grad_accum",
            "log_every",
            "eval_every",
            "checkpoint_every",
            "keep_checkpoints",
            "divergence_patience",
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise configlib.ConfigError(
                    f"train.{key}={value!r} must be a whole number of at least 1"
                )
        if not 0 < self.logits_fraction <= 1:
            raise configlib.ConfigError(
                f"train.logits_fraction={self.logits_fraction} must be "
                "in (0, 1] (1 = logits at every position)"
            )
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise configlib.ConfigError(
                f"train.grad_clip={self.grad_clip} must be positive (or null: no clipping)"
            )
        if self.time_limit_minutes is not None and self.time_limit_minutes <= 0:
            raise configlib.ConfigError("train.time_limit_minutes must be positive (or unset)")
        if self.batch_size % self.grad_accum:
            raise configlib.ConfigError(
                f"train.batch_size={self.batch_size} must be divisible by "
                f"train.grad_accum={self.grad_accum}"
            )
        run_dir = Path(self.run_dir)
        existing = next((p for p in (run_dir, *run_dir.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise configlib.ConfigError(
                f"train.run_dir={self.run_dir!r}: {existing} is a file; name a folder (a new "
                "one, or a run to resume)"
            )


@dataclasses.dataclass
class MeshConfig:
    data: int = -1  # -1: all devices not used by fsdp/tensor
    fsdp: int = 1
    tensor: int = 1


@dataclasses.dataclass
class Config:
    model: ModelConfig = dataclasses.field(default_factory=lambda: DEFAULT_MODEL)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    masking: MaskingConfig = dataclasses.field(default_factory=lambda: DEFAULT_MASKING)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)

    def validate(self):
        self.data.validate()
        self.train.validate()
        try:
            self.model.validate()
        except ValueError as e:  # the model's own check names its fields ModelConfig.<key>
            raise configlib.ConfigError(str(e).replace("ModelConfig.", "model.")) from None
        if self.data.seq_len > self.model.max_positions:
            raise configlib.ConfigError(
                f"data.seq_len={self.data.seq_len} exceeds model.max_positions="
                f"{self.model.max_positions}; lower the first or raise the second"
            )
        if self.train.lora_only and self.model.lora_rank <= 0:
            raise configlib.ConfigError("train.lora_only=true needs model.lora_rank > 0")


def load_config(path: str | None = None, overrides=()) -> Config:
    # Without a file, the built-in model and masking sections (not their class defaults) are
    # what `model.num_layers=4` and the like modify.
    builtin = {
        "model": configlib.to_dict(DEFAULT_MODEL),
        "masking": configlib.to_dict(DEFAULT_MASKING),
    }
    return configlib.load(Config, path, overrides, builtin=builtin)
