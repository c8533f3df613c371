"""Batches are pinned: digests of the training and validation batches and of single masked
examples, for real configs on the embedded Beauty data, must match the recorded fixture.

Regenerate (only when a batch change is intended) with

    python tests/training/test_batches_fixture.py --write
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

FIXTURE = Path(__file__).parent / "data" / "batch_digests.json"
CONFIGS = (
    "configs/tiny.yaml",
    "configs/beauty.yaml",
    "configs/experiments/beauty_r2_infill.yaml",
    "configs/experiments/beauty_r3_prompts.yaml",
    "configs/experiments/beauty_r4_multitask.yaml",
    "configs/experiments/ablate_entity_aware.yaml",
    "configs/experiments/ablate_entity_positions.yaml",
    "configs/experiments/ablate_span_order.yaml",
    "configs/experiments/glm_beauty_item_token_cloze.yaml",
)
# The suite checks the configs that each take a different path (text masking kinds, the causal
# sequence, entity-aware infilling, GLM spans, the prompt mixture); `--write` records them all.
CHECKED = (
    "configs/tiny.yaml",
    "configs/beauty.yaml",
    "configs/experiments/beauty_r2_infill.yaml",
    "configs/experiments/beauty_r4_multitask.yaml",
    "configs/experiments/ablate_entity_aware.yaml",
)
TRAIN_BATCHES = 3
SINGLE_EXAMPLES = 300
# Small and independent of the number of training steps. Item features never reach the
# batches (configs/beauty_features.yaml has beauty.yaml's digests) and take minutes to embed.
OVERRIDES = (
    "data.workers=0",
    "data.valid_users=40",
    "train.valid_ranking_users=0",
    "data.item_features=null",
)
ROOT = Path(__file__).resolve().parents[2]


def digest(arrays: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        value = np.asarray(arrays[key])
        h.update(f"{key}|{value.dtype.str}|{value.shape}|".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


def masked_example(batcher, record: dict, rng: np.random.Generator) -> dict:
    """One record as one masked example (1-D arrays): its sampled spans laid out alone."""
    from recsys_jax.masking import lay_out_one

    return lay_out_one(batcher.transform(record, rng), batcher.special)


def config_digests(config: str, data_dir: str) -> dict:
    from recsys_jax.config import load_config
    from recsys_jax.training.trainer import Trainer

    class DataOnly(Trainer):  # the batches need no model
        def _build_model(self) -> None:
            pass

    with tempfile.TemporaryDirectory() as run_dir:
        cfg = load_config(
            str(ROOT / config),
            list(OVERRIDES) + [f"data.data_dir={data_dir}", f"train.run_dir={run_dir}"],
        )
        trainer = DataOnly(cfg, log=lambda m: None)
        train = [digest(next(trainer.train_iter)) for _ in range(TRAIN_BATCHES)]
        trainer.train_iter.close()
        valid = [digest(b) for b in trainer.valid_batches]
        rng = np.random.default_rng(0)
        source = trainer.source
        picks = rng.choice(len(source), size=min(SINGLE_EXAMPLES, len(source)), replace=False)
        h = hashlib.sha256()
        for i in picks:
            h.update(digest(masked_example(trainer.batcher, source[int(i)], rng)).encode())
    return {"train": train, "valid": valid, "examples": h.hexdigest()}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("prepared"))


@pytest.mark.slow
@pytest.mark.parametrize("config", CHECKED)
def test_batches_match_fixture(config, data_dir):
    expected = json.loads(FIXTURE.read_text())[config]
    got = config_digests(config, data_dir)
    assert got["train"] == expected["train"], "training batches changed"
    assert got["valid"] == expected["valid"], "validation batches changed"
    assert got["examples"] == expected["examples"], "single masked examples changed"


def main() -> None:
    if "--write" not in sys.argv:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory() as data_dir:
        out = {}
        for config in CONFIGS:
            out[config] = config_digests(config, data_dir)
            print(config, out[config]["examples"][:12], len(out[config]["valid"]), flush=True)
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
