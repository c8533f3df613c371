import numpy as np

from recsys_jax.config import load_config
from recsys_jax.training.trainer import Trainer


def test_validation_hides_only_the_answer_whatever_the_training_masking(toy_p5, tmp_path,
                                                                        overrides):
    """The validation loss is the evaluation condition (answer masked, history visible), so runs
    trained with and without extra entity masks report comparable validation losses."""
    batches = {}
    for prob in (0.0, 1.0):
        cfg = load_config(None, overrides(toy_p5, tmp_path / "data", tmp_path / f"run{prob}",
                                          **{"masking.extra_entity_mask_prob": prob}))
        trainer = Trainer(cfg, log=lambda m: None)
        batches[prob] = trainer.valid_batches
        special = trainer.assets.tokenizer.special
    assert len(batches[0.0]) == len(batches[1.0]) > 0
    for plain, extra in zip(batches[0.0], batches[1.0]):
        assert set(plain) == set(extra)
        for key in plain:
            np.testing.assert_array_equal(plain[key], extra[key], err_msg=key)
        masks = np.isin(plain["tokens"], [special.mask, special.gmask])
        used = (plain["tokens"] != special.pad).any(axis=1)
        assert (masks.sum(axis=1)[used] == 1).all()  # one blank per example: its answer


def test_training_batches_do_mask_extra_entities(toy_p5, tmp_path, overrides):
    cfg = load_config(None, overrides(toy_p5, tmp_path / "data", tmp_path / "run",
                                      **{"masking.extra_entity_mask_prob": 1.0,
                                         "data.family_weights": "{sequential: 1.0}"}))
    trainer = Trainer(cfg, log=lambda m: None)
    special = trainer.assets.tokenizer.special
    batch = next(iter(trainer.train_iter))
    blanks = np.isin(batch["tokens"], [special.mask, special.gmask]).sum()
    assert blanks > 2 * int(batch["num_examples"])  # history items are blanks too
