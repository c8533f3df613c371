"""Hashed dropout: the rate it promises, inverted scaling, independent masks across keys and
neighbouring elements, uniform bits, and the nnx.Dropout calling convention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recsys_jax.model.dropout import Dropout, dropout, hashed_bits

SHAPE = (16, 8, 96, 96)  # ~1.2 M elements, an attention-probability shape


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_keeps_one_minus_rate_and_scales_what_it_keeps(rate):
    x = jnp.ones(SHAPE, jnp.float32)
    y = np.asarray(jax.jit(dropout, static_argnums=1)(x, rate, jax.random.key(3)))
    kept = y != 0
    assert abs(kept.mean() - (1 - rate)) < 0.003
    np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.01  # the expectation is unchanged


def test_masks_are_reproducible_per_key_and_independent_across_keys_and_neighbours():
    mask = lambda seed: np.asarray(dropout(jnp.ones(SHAPE), 0.5, jax.random.key(seed)) != 0)
    a, b = mask(0), mask(1)
    np.testing.assert_array_equal(a, mask(0))
    assert abs((a == b).mean() - 0.5) < 0.003  # two keys agree only by chance
    flat = a.reshape(-1)
    assert abs((flat[:-1] & flat[1:]).mean() - 0.25) < 0.003  # adjacent elements
    assert abs((a[0] & a[1]).mean() - 0.25) < 0.003  # rows of a batch differ
    folded = jax.random.fold_in(jax.random.key(0), 1)  # how nnx.Rngs derives per-site keys
    c = np.asarray(dropout(jnp.ones(SHAPE), 0.5, folded) != 0)
    assert abs((a == c).mean() - 0.5) < 0.003


def test_bits_are_uniform():
    bits = np.asarray(hashed_bits(jax.random.key(7), (1 << 20,)))
    counts = np.bincount(bits >> 24, minlength=256)  # the top byte
    expected = bits.size / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 350  # 255 degrees of freedom: p > 1e-4
    low = np.bincount(bits & 0xFF, minlength=256)  # and the low byte
    assert float(((low - expected) ** 2 / expected).sum()) < 350


def test_module_follows_the_nnx_dropout_convention():
    layer = Dropout(0.3)
    x = jnp.ones((4, 8))
    np.testing.assert_array_equal(layer(x, deterministic=True), x)
    y = layer(x, deterministic=False, rngs=nnx.Rngs(dropout=0))
    values = np.unique(np.asarray(y))
    assert np.all(np.isclose(values, 0.0) | np.isclose(values, 1 / 0.7))
    with pytest.raises(ValueError, match="dropout"):
        layer(x, deterministic=False)
    np.testing.assert_array_equal(Dropout(0.0)(x, deterministic=False), x)
