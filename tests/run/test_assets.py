"""The index and tokenizer a run fits see training data only, and ship inside checkpoints."""

import numpy as np

from recsys_jax.config import DataConfig
from recsys_jax.run.assets import RunAssets, fit_assets, open_prepared, tokenizer_corpus
from recsys_jax.tokenizer import entity_token_ids


def _prepared(toy_p5, tmp_path):
    cfg = DataConfig(
        dataset="toy",
        format="p5",
        path=str(toy_p5),
        data_dir=str(tmp_path),
        vocab_size=400,
        seq_len=96,
    )
    return cfg, open_prepared(cfg, log=lambda m: None)


def test_tokenizer_corpus_holds_no_text_of_held_out_only_items(toy_p5, tmp_path):
    cfg, prepared = _prepared(toy_p5, tmp_path)
    train_items = set(np.concatenate(prepared.train_sequences()).tolist())
    held_out = (
        set(prepared.validation_cases().targets.tolist())
        | set(prepared.test_cases().targets.tolist())
    ) - train_items
    assert held_out, "the toy data should have items seen only in validation/test"
    corpus = set(tokenizer_corpus(prepared, prepared.train_sequences()))
    for item in held_out:
        assert prepared.catalog.titles[item] not in corpus
    for item in list(train_items)[:10]:
        assert prepared.catalog.titles[item] in corpus


def test_assets_round_trip_every_item_and_survive_json(toy_p5, tmp_path):
    cfg, prepared = _prepared(toy_p5, tmp_path)
    for kind in ("title", "random_id", "item_token", "semantic_id"):
        cfg.index = kind
        assets = fit_assets(prepared, cfg, log=lambda m: None)
        pool = entity_token_ids(assets.tokenizer, assets.index)
        assert len(set(pool)) == prepared.num_items  # no two items share a token sequence
        for i, ids in enumerate(pool):
            assert assets.index.item_of(assets.tokenizer.decode(ids)) == i
        again = RunAssets.from_json(prepared, assets.to_json())
        assert entity_token_ids(again.tokenizer, again.index) == pool
