"""The chunked, gradient-fused cross-entropy of the tied output layer equals the plain
formulation (logits everywhere, optax cross-entropy, argmax accuracy): values and gradients,
over several chunks with padding, in float32 and bfloat16, and with logits taken only at
target positions on both sides of the batch's cap."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from recsys_jax.model.layers import tied_logits
from recsys_jax.training import loss as loss_lib
from recsys_jax.training.loss import logits_cap_advice, target_loss_sums, tied_xent_sums

ROWS, LENGTH, HIDDEN, VOCAB = 3, 16, 8, 50


def _plain(hidden, table, targets, weights):
    """(loss sum, target count, correct) the obvious way: the reference."""
    logits = tied_logits(hidden, table)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    return jnp.sum(ce * weights), jnp.sum(weights), jnp.sum(correct * weights)


def _case(targets_per_row, seed=0):
    rng = np.random.default_rng(seed)
    hidden = jnp.asarray(rng.normal(size=(ROWS, LENGTH, HIDDEN)), jnp.float32)
    table = jnp.asarray(rng.normal(size=(VOCAB, HIDDEN)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, VOCAB, (ROWS, LENGTH)), jnp.int32)
    mask = np.zeros((ROWS, LENGTH), np.float32)
    for r, n in enumerate(targets_per_row):
        mask[r, rng.choice(LENGTH, n, replace=False)] = 1.0
    return hidden, table, targets, jnp.asarray(mask)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 8 rows for these shapes, so 37 rows make 5 chunks, the last one padded."""
    monkeypatch.setattr(loss_lib, "_CHUNK_BYTES", 4 * VOCAB * 8)
    monkeypatch.setattr(loss_lib, "_CPU_CHUNK_ROWS", 8)
    assert loss_lib.chunk_rows(37, VOCAB, HIDDEN) == 8


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_chunked_loss_and_gradients_equal_the_plain_formulation(small_chunks, dtype):
    rng = np.random.default_rng(1)
    rows = 37
    hidden = jnp.asarray(rng.normal(size=(rows, HIDDEN)), dtype)
    table = jnp.asarray(rng.normal(size=(VOCAB, HIDDEN)) * 0.5, jnp.float32)
    targets = jnp.asarray(rng.integers(0, VOCAB, rows), jnp.int32)
    # Some rows' target is their argmax, so the correct count is not trivially 0.
    logits = np.asarray(tied_logits(hidden, table))
    targets = targets.at[::3].set(jnp.asarray(logits.argmax(-1)[::3], jnp.int32))
    weights = jnp.asarray(rng.uniform(0.5, 2.0, rows) * (np.arange(rows) % 5 != 0), jnp.float32)

    got_loss, got_correct = jax.jit(tied_xent_sums)(hidden, table, targets, weights)
    want_loss, _, want_correct = _plain(hidden, table, targets, weights)
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(got_loss, want_loss, rtol=tol)
    assert float(got_correct) == pytest.approx(float(want_correct)) and float(want_correct) > 0

    def grads(fn):
        return jax.jit(jax.grad(lambda h, t: fn(h, t, targets, weights)[0], argnums=(0, 1)))(
            hidden, table
        )

    for got, want in zip(grads(tied_xent_sums), grads(_plain)):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(
            np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=tol, atol=tol * 1e-1
        )


@pytest.mark.parametrize("start, stop", [(0, 5), (0, 16), (16, 21)])
def test_chunks_after_the_last_weighted_row_are_not_computed(small_chunks, start, stop):
    """Rows [start, stop) carry weight; the chunks after the last of them hold NaN, which would
    poison the loss and both gradients (NaN * 0) had they been computed. Chunks before it run
    even when empty (16, 21), and the values equal the plain formulation."""
    rng = np.random.default_rng(2)
    rows, first_dead = 37, 8 * -(-stop // 8)
    hidden = rng.normal(size=(rows, HIDDEN)).astype(np.float32)
    hidden[first_dead:] = np.nan
    table = jnp.asarray(rng.normal(size=(VOCAB, HIDDEN)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, VOCAB, rows), jnp.int32)
    weights = jnp.asarray((np.arange(rows) >= start) & (np.arange(rows) < stop), jnp.float32)

    def value_and_grads(fn, h):
        loss = lambda h, t: fn(h, t, targets, weights)[0]
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(jnp.asarray(h), table)

    got_loss, (got_dh, got_dt) = value_and_grads(tied_xent_sums, hidden)
    want_loss, (want_dh, want_dt) = value_and_grads(_plain, np.nan_to_num(hidden, nan=0.0))
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(got_dh[:first_dead], want_dh[:first_dead], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_dt, want_dt, rtol=1e-5, atol=1e-6)


def test_the_loss_scales_its_gradient_by_the_incoming_cotangent():
    hidden, table, targets, mask = _case((5, 5, 5))
    h, t, w = hidden.reshape(-1, HIDDEN), targets.reshape(-1), mask.reshape(-1)
    once = jax.grad(lambda h: tied_xent_sums(h, table, t, w)[0])(h)
    thrice = jax.grad(lambda h: 3.0 * tied_xent_sums(h, table, t, w)[0])(h)
    np.testing.assert_allclose(thrice, 3.0 * once, rtol=1e-6)


@pytest.mark.parametrize(
    "targets_per_row, fraction",
    [((3, 0, 9), 0.25), ((3, 9, 4), 0.25), ((3, 9, 4), 1.0), ((16, 16, 16), 1.0)],
    ids=["under_cap", "over_cap_falls_back", "no_cap", "every_position"],
)
def test_target_positions_only_match_logits_everywhere(small_chunks, targets_per_row, fraction):
    hidden, table, targets, mask = _case(targets_per_row)  # cap 0.25: 12 of the 48 positions
    got = jax.jit(target_loss_sums, static_argnums=4)(hidden, table, targets, mask, fraction)
    want = _plain(hidden, table, targets, mask)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert float(got[1]) == sum(targets_per_row)  # every target counted, none dropped

    loss = lambda h, t, f: target_loss_sums(h, t, targets, mask, f)[0]
    grads = jax.grad(loss, argnums=(0, 1))(hidden, table, fraction)
    plain = jax.grad(lambda h, t: _plain(h, t, targets, mask)[0], argnums=(0, 1))(hidden, table)
    for g, d in zip(grads, plain):
        np.testing.assert_allclose(g, d, rtol=1e-5, atol=1e-6)


def test_exact_rows_traces_the_same_values_in_one_chunk(small_chunks):
    hidden, table, targets, mask = _case((3, 9, 4))
    want = target_loss_sums(hidden, table, targets, mask, 1.0)
    with loss_lib.exact_rows(16):
        assert loss_lib.chunk_rows(16, VOCAB, HIDDEN) == 16
        got = target_loss_sums(hidden, table, targets, mask, 1.0)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert loss_lib.chunk_rows(16, VOCAB, HIDDEN) == 8  # restored


def test_logits_cap_advice_only_when_most_batches_exceed_the_cap():
    shares = np.array([0.3, 0.35, 0.1, 0.32])
    advice = logits_cap_advice(shares, 0.25)
    assert advice is not None and "75% of the first batches" in advice
    assert "train.logits_fraction=0.45 would" in advice  # 1.25 x the largest share, to 0.05
    assert logits_cap_advice(shares, 0.4) is None  # no batch over the cap
    assert logits_cap_advice(np.array([0.3, 0.1]), 0.25) is None  # half, not most
    assert logits_cap_advice(shares, 1.0) is None  # every position is already computed
