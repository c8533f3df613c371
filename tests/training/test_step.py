"""The loss: logits taken only at target positions give the same loss, accuracy and gradients
as logits everywhere, on both sides of the batch's cap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recsys_jax.model.glm import tied_logits
from recsys_jax.training.step import target_loss_sums, token_loss_sums

ROWS, LENGTH, HIDDEN, VOCAB = 3, 16, 8, 50


def _case(targets_per_row, seed=0):
    rng = np.random.default_rng(seed)
    hidden = jnp.asarray(rng.normal(size=(ROWS, LENGTH, HIDDEN)), jnp.float32)
    table = jnp.asarray(rng.normal(size=(VOCAB, HIDDEN)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, VOCAB, (ROWS, LENGTH)), jnp.int32)
    mask = np.zeros((ROWS, LENGTH), np.float32)
    for r, n in enumerate(targets_per_row):
        mask[r, rng.choice(LENGTH, n, replace=False)] = 1.0
    return hidden, table, targets, jnp.asarray(mask)


def _dense(hidden, table, targets, mask):
    return token_loss_sums(tied_logits(hidden, table), targets, mask)


@pytest.mark.slow
@pytest.mark.parametrize(
    "targets_per_row", [(3, 0, 9), (3, 9, 4)], ids=["under_cap", "over_cap_falls_back"]
)
def test_target_positions_only_match_logits_everywhere(targets_per_row):
    hidden, table, targets, mask = _case(targets_per_row)
    fraction = 0.25  # cap = 12 of the 48 positions
    got = jax.jit(target_loss_sums, static_argnums=4)(hidden, table, targets, mask, fraction)
    want = _dense(hidden, table, targets, mask)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert float(got[1]) == sum(targets_per_row)  # every target counted, none dropped

    loss = lambda h, t, f: target_loss_sums(h, t, targets, mask, f)[0]
    grads = jax.grad(loss, argnums=(0, 1))(hidden, table, fraction)
    dense_grads = jax.grad(loss, argnums=(0, 1))(hidden, table, 1.0)
    for g, d in zip(grads, dense_grads):
        np.testing.assert_allclose(g, d, rtol=1e-5, atol=1e-6)
