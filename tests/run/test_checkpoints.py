"""RunCheckpoints: the best checkpoint is the best by validation, not the latest."""

import jax.numpy as jnp

from recsys_jax.run.checkpoints import RunCheckpoints


def _save(ckpt, step, valid):
    ckpt.save(
        step, {"w": jnp.full((2,), float(step))}, {"it": step}, {"c": 1}, {"a": 1}, {"m": 1}, valid
    )


def test_best_step_is_the_best_validated_not_the_latest(tmp_path):
    ckpt = RunCheckpoints(tmp_path, keep=2, async_save=False)
    _save(ckpt, 1, {"valid_loss": 3.0, "valid_NDCG@10": 0.10})
    _save(ckpt, 2, {"valid_loss": 2.9, "valid_NDCG@10": 0.30})
    _save(ckpt, 3, {"valid_loss": 2.8, "valid_NDCG@10": 0.20})
    _save(ckpt, 4, None)  # a checkpoint that was not validated
    _save(ckpt, 5, {"valid_loss": 2.7, "valid_NDCG@10": 0.25})
    ckpt.wait()
    assert ckpt.best_step() == 2 and ckpt.latest_step() == 5
    assert 2 in ckpt.manager.all_steps()  # kept although older than the latest two
    ckpt.close()
    reopened = RunCheckpoints(tmp_path, keep=2, async_save=False)
    assert reopened.best_step() == 2
    reopened.close()


def test_without_ranking_the_lowest_validation_loss_is_best(tmp_path):
    ckpt = RunCheckpoints(tmp_path, keep=1, async_save=False)
    for step, loss in [(1, 3.0), (2, 2.5), (3, 2.7)]:
        _save(ckpt, step, {"valid_loss": loss})
    ckpt.wait()
    assert ckpt.best_step() == 2
    ckpt.close()
