"""Shared fixtures: a toy P5-layout dataset and a tiny config (a training run in seconds)."""

import json

import numpy as np
import pytest

WORDS = (
    "rose nail polish cream soap hair oil mask brush gel lip eye tint balm serum foam "
    "clay wax musk lotion"
).split()


def write_toy_p5(folder, num_users=48, num_items=120, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for u in range(1, num_users + 1):
        # Users walk the catalog in small steps: a pattern a model can learn.
        start = int(rng.integers(1, num_items + 1))
        seq = [((start - 1 + 2 * k) % num_items) + 1 for k in range(int(rng.integers(5, 9)))]
        lines.append(" ".join(map(str, [u] + seq)))
    (folder / "sequential_data.txt").write_text("\n".join(lines) + "\n")
    rows = ["item_id\tasin\ttitle\tcategories_json\tidgenrec_text_id\ttitle_source"]
    for i in range(1, num_items + 1):
        title = f"{WORDS[i % len(WORDS)].title()} {WORDS[(3 * i) % len(WORDS)]} {i % 7}"
        rows.append(f'{i}\tA{i:05d}\t{title}\t"[[""Beauty"", ""{WORDS[i % 5]}""]]"\t\ttoy')
    (folder / "items.tsv").write_text("\n".join(rows) + "\n")
    return folder


GPT2_CORPUS = [
    "Red Nail Polish, 0.5 Ounce",
    "Blue Shampoo for dry hair",
    "user_12 bought",
    "Here is the purchase history of",
    "What to recommend next?",
] * 20
GLM_ADDED = ["[MASK]", "<|startofpiece|>", "<|endofpiece|>", "[sMASK]", "[gMASK]", "[CLS]"]


def write_gpt2_checkpoint_tokenizer(folder, extra_rows=2, corpus=GPT2_CORPUS) -> tuple[int, dict]:
    """vocab.json + merges.txt + added_tokens.json as an English GLM ships them: a byte-level
    BPE whose vocabulary ends with <|endoftext|>, then GLM's added tokens. Returns (embedding
    rows, the added-token ids)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.model.save(str(folder))  # vocab.json, merges.txt
    size = tok.get_vocab_size()
    added = {name: size + k for k, name in enumerate(GLM_ADDED)}
    (folder / "added_tokens.json").write_text(json.dumps(added))
    return size + len(GLM_ADDED) + extra_rows, added


MULTITASK = (
    "{sequential: 1.0, direct: 0.5, rating: 0.5, explanation: 0.5, review: 0.5, sequence_text: 0.3}"
)


def tiny_overrides(data_path, data_dir, run_dir, steps=6, **extra):
    base = {
        "data.format": "p5",
        "data.path": str(data_path),
        "data.dataset": "toy",
        "data.data_dir": str(data_dir),
        "data.vocab_size": 400,
        "data.seq_len": 96,
        "data.max_history": 6,
        "data.valid_users": 16,
        "model.num_layers": 1,
        "model.hidden_size": 32,
        "model.num_heads": 2,
        "model.max_positions": 128,
        "model.max_block_positions": 128,
        "train.run_dir": str(run_dir),
        "train.steps": steps,
        "train.batch_size": 8,
        "train.warmup_steps": 2,
        "train.log_every": 1,
        "train.eval_every": 3,
        "train.checkpoint_every": 3,
        "train.plot": False,
        "train.learning_rate": 3e-3,
        # The multitask preset (configs/tiny.yaml) rather than the built-in Beauty recipe.
        "data.index": "title",
        "data.family_weights": MULTITASK,
        "masking.entity_positions": True,
        "model.mlp_dim": "null",
        "model.dropout_rate": 0.1,
        "model.attention_dropout_rate": 0.1,
        "train.end_lr_ratio": 0.1,
        "train.weight_decay": 0.01,
        "train.b2": 0.98,
        "train.grad_clip": 1.0,
        "train.logits_fraction": 0.25,
        "train.valid_ranking_users": 0,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture(scope="session")
def overrides():
    return tiny_overrides


@pytest.fixture()
def gpt2_tokenizer_files():
    return write_gpt2_checkpoint_tokenizer


@pytest.fixture(scope="session")
def toy_p5(tmp_path_factory):
    return write_toy_p5(tmp_path_factory.mktemp("toy") / "toy")


@pytest.fixture(scope="session")
def toy_run(toy_p5, tmp_path_factory):
    """A tiny model trained for a few steps on the toy data: (run_dir, data_dir)."""
    from recsys_jax.config import load_config
    from recsys_jax.training.trainer import Trainer

    root = tmp_path_factory.mktemp("toy_run")
    cfg = load_config(
        None,
        tiny_overrides(
            toy_p5,
            root / "data",
            root / "run",
            steps=4,
            **{"train.eval_every": 4, "train.checkpoint_every": 4},
        ),
    )
    Trainer(cfg, log=lambda m: None).run()
    return root / "run", root / "data"


ITEM_SEQUENCE_RUN = {
    "data.index": "item_token",
    "data.family_weights": "{item_sequence: 1.0}",
    "data.sequence_objective": "causal",
    "masking.entity_positions": False,
    "train.valid_ranking_users": -1,
    "data.seq_len": 32,
    "model.max_positions": 32,
    "model.max_block_positions": 32,
}


@pytest.fixture(scope="session")
def toy_items_run(toy_p5, tmp_path_factory):
    """A tiny causal item-sequence model (item_token, the bare sequence, a next-item loss at
    every item), 40 steps with validation ranking: (run_dir, data_dir)."""
    from recsys_jax.config import load_config
    from recsys_jax.training.trainer import Trainer

    root = tmp_path_factory.mktemp("toy_items_run")
    cfg = load_config(
        None,
        tiny_overrides(
            toy_p5,
            root / "data",
            root / "run",
            steps=40,
            **{"train.eval_every": 20, "train.checkpoint_every": 20, **ITEM_SEQUENCE_RUN},
        ),
    )
    Trainer(cfg, log=lambda m: None).run()
    return root / "run", root / "data"


def write_toy_reviews(folder, num_users=60, num_items=30, per_user=8):
    """Amazon review-JSON layout with stars, review text and summaries: user u reviews items
    u..u+per_user-1 (mod num_items); each review's text names the item's first word."""
    import gzip
    import json

    folder.mkdir(parents=True, exist_ok=True)
    t = 1_400_000_000
    with gzip.open(folder / "reviews_Toyrev_5.json.gz", "wt") as f:
        for u in range(num_users):
            for j in range(per_user):
                i, t = (u + j) % num_items, t + 1
                word = WORDS[i % len(WORDS)]
                f.write(
                    json.dumps(
                        {
                            "reviewerID": f"U{u}",
                            "asin": f"B{i:03d}",
                            "overall": float(1 + (u + i) % 5),
                            "unixReviewTime": t,
                            "summary": f"good {word}",
                            "reviewText": f"The {word} feels great on skin. I would buy it again.",
                        }
                    )
                    + "\n"
                )
    with gzip.open(folder / "meta_Toyrev.json.gz", "wt") as f:
        for i in range(num_items):
            f.write(
                repr(
                    {
                        "asin": f"B{i:03d}",
                        "title": f"{WORDS[i % len(WORDS)].title()} {i}",
                        "categories": [["Beauty"]],
                    }
                )
                + "\n"
            )
    return folder


@pytest.fixture(scope="session")
def toy_review_run(tmp_path_factory):
    """A tiny model trained a few steps on every family of a toy review dataset with stars:
    (run_dir, data_dir)."""
    from recsys_jax.config import load_config
    from recsys_jax.data.prepare import prepare
    from recsys_jax.training.trainer import Trainer

    root = tmp_path_factory.mktemp("toy_review_run")
    src = write_toy_reviews(root / "src")
    prepare(
        "amazon_json",
        str(src),
        data_dir=str(root / "data"),
        num_negatives=20,
        progress=False,
        log=lambda m: None,
    )
    cfg = load_config(
        None,
        tiny_overrides(
            src,
            root / "data",
            root / "run",
            steps=4,
            **{
                "data.format": "amazon_json",
                "data.dataset": "reviews_Toyrev_5",
                "data.train_candidates": 8,
                "train.eval_every": 4,
                "train.checkpoint_every": 4,
            },
        ),
    )
    Trainer(cfg, log=lambda m: None).run()
    return root / "run", root / "data"


@pytest.fixture(scope="session")
def toy_bundle(toy_run, tmp_path_factory):
    """`toy_run` exported as a serving bundle (beam 8, float32): its folder."""
    from recsys_jax.export import export_bundle

    run_dir, _ = toy_run
    return export_bundle(
        run_dir, tmp_path_factory.mktemp("bundle") / "toy", beam=8, log=lambda m: None
    )


@pytest.fixture(autouse=True)
def exact_float32_matmuls():
    """Equality tests compare float32 paths within 1e-5; GPUs default to TF32 matmuls
    (about 1e-4 apart), so tests ask for full float32 precision everywhere."""
    import jax

    with jax.default_matmul_precision("float32"):
        yield
