import numpy as np
import pytest

from recsys_jax.config import load_config
from recsys_jax.training.trainer import Trainer

pytestmark = pytest.mark.slow


def test_extra_entity_masks_change_training_batches_but_not_validation(toy_p5, tmp_path, overrides):
    """Training with `masking.extra_entity_mask_prob` hides history items too; validation keeps
    the evaluation condition (answer masked, history visible), so runs trained with and
    without extra masks report comparable validation losses."""
    trainers = {}
    for prob in (0.0, 1.0):
        cfg = load_config(
            None,
            overrides(
                toy_p5,
                tmp_path / "data",
                tmp_path / f"run{prob}",
                **{
                    "masking.extra_entity_mask_prob": prob,
                    "data.family_weights": "{sequential: 1.0}",
                },
            ),
        )
        trainers[prob] = Trainer(cfg, log=lambda m: None)
    special = trainers[0.0].assets.tokenizer.special
    blank_ids = [special.mask, special.gmask]

    plain, extra = trainers[0.0].valid_batches, trainers[1.0].valid_batches
    assert len(plain) == len(extra) > 0
    for a, b in zip(plain, extra):
        assert set(a) == set(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        used = (a["tokens"] != special.pad).any(axis=1)
        assert (np.isin(a["tokens"], blank_ids).sum(axis=1)[used] == 1).all()  # the answer

    batch = next(iter(trainers[1.0].train_iter))
    assert np.isin(batch["tokens"], blank_ids).sum() > 2 * int(batch["num_examples"])
