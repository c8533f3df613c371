"""Cross-entropy of the tied output layer, computed in row chunks with its gradient fused in.

The output layer is most of a small recommender's training step: `[rows, vocab]` logits for a
vocabulary of text pieces plus every catalog item (13k on Beauty, 32k for `small`). Written
plainly (`logits = h @ E.T`, softmax cross-entropy, `argmax` for accuracy) autodiff keeps the
whole logits array, reads and writes it about ten times per step (max, exp, argmax, the
scatter of the target's one-hot, a transposed copy for the table's gradient) and, on CPU, that
memory traffic costs more than the matmuls (docs/results.md, training speed).

`tied_xent_sums` takes the hidden states at the scored positions and returns the summed loss
and the number of correct argmax predictions. A `lax.scan` walks over chunks of rows: each
chunk's logits, softmax, loss and logits gradient `softmax - onehot` are made while the chunk is
in cache, and the chunk's contributions to both input gradients are accumulated right away, so
the backward pass only scales the stored gradients by the incoming cotangent. Same values as
the plain formulation up to float rounding (tests/training/test_loss.py).
"""

from __future__ import annotations

import contextlib
import math

import jax
import jax.numpy as jnp
import numpy as np

# A chunk's float32 logits should fit the last-level cache (~4 MiB); but at least as many rows
# as the hidden width, so that updating the [vocab, hidden] table gradient once per chunk costs
# no more memory traffic than the chunk's logits.
_CHUNK_BYTES = 4 << 20


@contextlib.contextmanager
def single_chunk():
    """Trace `tied_xent_sums` as one chunk (for XLA's cost analysis, which counts a loop body
    once; the values are the same)."""
    global _CHUNK_BYTES
    saved, _CHUNK_BYTES = _CHUNK_BYTES, 1 << 62
    try:
        yield
    finally:
        _CHUNK_BYTES = saved


def chunk_rows(rows: int, vocab: int, hidden: int) -> int:
    """Rows per chunk for `rows` scored positions (see `_CHUNK_BYTES`), spread evenly over the
    chunks so that padding stays under 8 rows per chunk."""
    target = max(hidden, _CHUNK_BYTES // (4 * vocab), 8)
    count = math.ceil(rows / target)
    return min(rows, 8 * math.ceil(rows / count / 8))


def _sums_and_grads(hidden, table, targets, weights, with_grads: bool):
    rows, width = hidden.shape
    vocab = table.shape[0]
    size = chunk_rows(rows, vocab, width)
    count = math.ceil(rows / size)
    pad = count * size - rows
    if pad:  # padded rows carry weight 0: no loss, no gradient
        hidden = jnp.pad(hidden, ((0, pad), (0, 0)))
        targets = jnp.pad(targets, (0, pad))
        weights = jnp.pad(weights, (0, pad))
    table_c = table.astype(hidden.dtype)
    chunks = (
        hidden.reshape(count, size, width),
        targets.reshape(count, size),
        weights.reshape(count, size).astype(jnp.float32),
    )
    vocab_ids = jnp.arange(vocab, dtype=targets.dtype)

    def chunk(h, t, w):
        """(loss, correct) of one chunk, plus (its table-gradient term, dh) `with_grads`."""
        logits = jnp.einsum("rd,vd->rv", h, table_c, preferred_element_type=jnp.float32)
        top = jnp.max(logits, axis=-1)
        exp = jnp.exp(logits - top[:, None])
        total = jnp.sum(exp, axis=-1)
        target_logit = jnp.take_along_axis(logits, t[:, None], axis=1)[:, 0]
        loss = jnp.sum((top + jnp.log(total) - target_logit) * w)
        # Correct when the target reaches the row's maximum (an exact tie with an earlier id
        # counts as correct, where argmax would pick the other id: accuracy is only a metric).
        correct = jnp.sum(jnp.where(target_logit >= top, w, 0.0))
        if not with_grads:
            return (loss, correct), None
        is_target = vocab_ids[None, :] == t[:, None]
        dlogits = ((exp / total[:, None] - is_target) * w[:, None]).astype(h.dtype)
        dh = jnp.einsum("rv,vd->rd", dlogits, table_c, preferred_element_type=jnp.float32)
        table_term = jnp.einsum("rv,rd->vd", dlogits, h, preferred_element_type=jnp.float32)
        return (loss, correct), (table_term, dh.astype(h.dtype))

    if not with_grads:
        loss, correct = jax.lax.map(lambda c: chunk(*c)[0], chunks)
        return (jnp.sum(loss), jnp.sum(correct)), None

    # The first chunk's table term starts the sum (no zero-filled table, one add fewer).
    (loss0, correct0), (table_grad, dh0) = chunk(*(c[0] for c in chunks))

    def body(table_grad, inputs):
        sums, (table_term, dh) = chunk(*inputs)
        return table_grad + table_term, (sums, dh)

    rest = tuple(c[1:] for c in chunks)
    table_grad, ((loss, correct), dh) = jax.lax.scan(body, table_grad, rest)
    sums = (loss0 + jnp.sum(loss), correct0 + jnp.sum(correct))
    hidden_grad = jnp.concatenate([dh0[None], dh]).reshape(count * size, width)[:rows]
    return sums, (hidden_grad, table_grad.astype(table.dtype))


@jax.custom_vjp
def tied_xent_sums(hidden, table, targets, weights):
    """(sum of weighted cross-entropy, weighted number of correct argmax predictions) of the
    logits `hidden @ table.T`.

    hidden [rows, d] (compute dtype), table [vocab, d], targets [rows] int, weights [rows].
    Logits are multiplied in hidden's dtype and accumulated in float32. Differentiable in
    `hidden` and `table` through the loss sum (the correct count has no gradient)."""
    return _sums_and_grads(hidden, table, targets, weights, with_grads=False)[0]


def _fwd(hidden, table, targets, weights):
    return _sums_and_grads(hidden, table, targets, weights, with_grads=True)


def _bwd(grads, cotangents):
    hidden_grad, table_grad = grads
    scale = cotangents[0]  # the correct count is piecewise constant: no gradient
    return (
        (scale * hidden_grad.astype(jnp.float32)).astype(hidden_grad.dtype),
        scale * table_grad,
        None,
        None,
    )


tied_xent_sums.defvjp(_fwd, _bwd)


def target_loss_sums(
    hidden: jax.Array, table: jax.Array, targets: jax.Array, loss_mask: jax.Array, fraction: float
):
    """(sum of masked cross-entropy, number of target tokens, number correct) of the tied logits
    `hidden @ table.T` for hidden [B, L, d], computing logits only at loss positions when they
    are at most `fraction` of the batch's positions.

    Only Part B positions carry loss in the prompt-based recipes (~10 % on Beauty). The batch's
    first `ceil(fraction * rows * length)` loss positions (a static size) are gathered; a batch
    with more falls back to every position inside a `lax.cond`, so the result is the same
    either way. `fraction` >= 1: always every position.
    """
    rows, length = loss_mask.shape
    flat_hidden = hidden.reshape(rows * length, -1)
    flat_mask = loss_mask.reshape(-1)
    flat_targets = targets.reshape(-1)
    count = jnp.sum(loss_mask)
    cap = math.ceil(fraction * rows * length - 1e-9)
    dense = lambda h: tied_xent_sums(h, table, flat_targets, flat_mask)
    if not 0 < cap < rows * length:
        loss, correct = dense(flat_hidden)
        return loss, count, correct

    def sparse(h):
        (index,) = jnp.nonzero(flat_mask > 0, size=cap, fill_value=0)
        weight = jnp.where(jnp.arange(cap) < jnp.sum(flat_mask > 0), flat_mask[index], 0.0)
        return tied_xent_sums(h[index], table, flat_targets[index], weight)

    loss, correct = jax.lax.cond(jnp.sum(flat_mask > 0) <= cap, sparse, dense, flat_hidden)
    return loss, count, correct


def logits_cap_advice(shares: np.ndarray, cap: float) -> str | None:
    """A hint when most batches carry loss at more than `train.logits_fraction` (`cap`) of
    their positions (`shares`, one per batch): those steps take the slow path of
    `target_loss_sums` (logits at every position)."""
    over = float(np.mean(shares > cap))
    if cap >= 1 or over <= 0.5:
        return None
    suggest = min(1.0, math.ceil(shares.max() * 1.25 * 20) / 20)
    return (
        f"[speed] {over:.0%} of the first batches have loss at more than "
        f"train.logits_fraction={cap} of their positions (up to {shares.max():.1%}), so they "
        f"compute logits everywhere; train.logits_fraction={suggest:g} would avoid that"
    )
