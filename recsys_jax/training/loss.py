"""Cross-entropy of the tied output layer, computed in row chunks with its gradient fused in.

The output layer is most of a small recommender's training step: `[rows, vocab]` logits for a
vocabulary of text pieces plus every catalog item (13k on Beauty, 32k for `small`). Written
plainly (`logits = h @ E.T`, softmax cross-entropy, `argmax` for accuracy) autodiff keeps the
whole logits array, reads and writes it about ten times per step (max, exp, argmax, the
scatter of the target's one-hot, a transposed copy for the table's gradient) and, on CPU, that
memory traffic costs more than the matmuls (docs/results.md, training speed).

`tied_xent_sums` takes the hidden states at the scored positions and returns the summed loss
and the number of correct argmax predictions. A loop walks over chunks of rows: each chunk's
logits, softmax, loss and logits gradient `softmax - onehot` are made while the chunk is in
cache, and the chunk's contributions to both input gradients are accumulated right away, so
the backward pass only scales the stored gradients by the incoming cotangent. The loop stops
after the last chunk holding a weighted row, and `target_loss_sums` gathers the positions that
carry loss to the front, so positions without loss cost no logits. Same values as the plain
formulation up to float rounding (tests/training/test_loss.py).
"""

from __future__ import annotations

import contextlib
import math

import jax
import jax.numpy as jnp
import numpy as np

# A chunk holds ~4 MiB of float32 logits (the last-level cache), but never fewer rows than a
# floor. On the CPU the floor is 128 rows: the matmuls still run near their best there (hidden
# 64-512, measured) and small chunks leave fewer empty rows to compute (`_sums_and_grads`).
# On accelerators it is the hidden width, so that adding a chunk's [vocab, hidden]
# table-gradient term costs no more memory traffic than the chunk's logits.
_CHUNK_BYTES = 4 << 20
_CPU_CHUNK_ROWS = 128
_exact_rows: int | None = None


@contextlib.contextmanager
def exact_rows(rows: int):
    """Trace `target_loss_sums` with exactly `rows` gathered loss positions in one chunk, the
    work of a batch with that many: for XLA's cost analysis, which counts a loop body once
    and cannot know how many chunks a batch leaves empty."""
    global _exact_rows
    saved, _exact_rows = _exact_rows, int(rows)
    try:
        yield
    finally:
        _exact_rows = saved


def chunk_rows(rows: int, vocab: int, hidden: int) -> int:
    """Rows per chunk for `rows` scored positions (see `_CHUNK_BYTES`), spread evenly over the
    chunks so that padding stays under 8 rows per chunk."""
    if _exact_rows is not None:
        return rows
    floor = _CPU_CHUNK_ROWS if jax.default_backend() == "cpu" else hidden
    target = max(floor, _CHUNK_BYTES // (4 * vocab), 8)
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
    hidden = hidden.reshape(count, size, width)
    targets = targets.reshape(count, size)
    weights = weights.reshape(count, size).astype(jnp.float32)
    # Chunks after the last one with a weighted row add nothing: the loop stops before them.
    # `target_loss_sums` puts the scored rows first, so a batch with loss at a quarter of its
    # positions costs about a quarter of the logits.
    has_weight = jnp.any(weights != 0, axis=1)
    live = jnp.max(jnp.where(has_weight, jnp.arange(1, count + 1), 1))
    vocab_ids = jnp.arange(vocab, dtype=targets.dtype)

    def chunk(i):
        """(loss, correct) of chunk i, plus (its table-gradient term, dh) `with_grads`."""
        h, t, w = hidden[i], targets[i], weights[i]
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
            return loss, correct
        is_target = vocab_ids[None, :] == t[:, None]
        dlogits = ((exp / total[:, None] - is_target) * w[:, None]).astype(h.dtype)
        dh = jnp.einsum("rv,vd->rd", dlogits, table_c, preferred_element_type=jnp.float32)
        table_term = jnp.einsum("rv,rd->vd", dlogits, h, preferred_element_type=jnp.float32)
        return loss, correct, table_term, dh.astype(h.dtype)

    if count == 1:  # no loop (XLA's cost analysis counts a loop body once, run or not)
        sums = chunk(0)
        if not with_grads:
            return sums[:2], None
        loss, correct, table_grad, dh = sums
        return (loss, correct), (dh[:rows], table_grad.astype(table.dtype))

    if not with_grads:

        def body(i, sums):
            loss, correct = chunk(i)
            return sums[0] + loss, sums[1] + correct

        return jax.lax.fori_loop(0, live, body, (jnp.zeros(()), jnp.zeros(()))), None

    # The first chunk's table term starts the sum (no zero-filled table, one add fewer).
    loss, correct, table_grad, dh0 = chunk(0)
    hidden_grad = jnp.zeros_like(hidden).at[0].set(dh0)

    def body(i, carry):
        loss_sum, correct_sum, table_grad, hidden_grad = carry
        loss, correct, table_term, dh = chunk(i)
        hidden_grad = jax.lax.dynamic_update_index_in_dim(hidden_grad, dh, i, 0)
        return loss_sum + loss, correct_sum + correct, table_grad + table_term, hidden_grad

    loss, correct, table_grad, hidden_grad = jax.lax.fori_loop(
        1, live, body, (loss, correct, table_grad, hidden_grad)
    )
    hidden_grad = hidden_grad.reshape(count * size, width)[:rows]
    return (loss, correct), (hidden_grad, table_grad.astype(table.dtype))


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


@jax.named_scope("output_layer")  # a name profiles group by (scripts/profile_step.py)
def target_loss_sums(
    hidden: jax.Array, table: jax.Array, targets: jax.Array, loss_mask: jax.Array, fraction: float
):
    """(sum of masked cross-entropy, number of target tokens, number correct) of the tied logits
    `hidden @ table.T` for hidden [B, L, d], computing logits only at loss positions.

    The loss positions are gathered to the front (in order) and `tied_xent_sums` stops after
    the last chunk that holds one, so positions without loss (Part A, padding, an item
    sequence's first item) cost no logits. The gathered buffer has a static size: the first
    `ceil(fraction * rows * length)` loss positions; a batch with more takes a buffer of every
    position inside a `lax.cond`, so the result is the same either way (`train.logits_fraction`).
    With more than one device the full-size path keeps every position in place instead: the
    batch is sharded, and a gather across it would replicate the loss on every device.
    """
    rows, length = loss_mask.shape
    flat_hidden = hidden.reshape(rows * length, -1)
    flat_mask = loss_mask.reshape(-1)
    flat_targets = targets.reshape(-1)
    count = jnp.sum(loss_mask)
    scored = jnp.sum(flat_mask > 0)

    def gathered(h, size):
        (index,) = jnp.nonzero(flat_mask > 0, size=size, fill_value=0)
        weight = jnp.where(jnp.arange(size) < scored, flat_mask[index], 0.0)
        return tied_xent_sums(h[index], table, flat_targets[index], weight)

    everything = rows * length
    if jax.device_count() > 1:
        # Gathering across a batch sharded over devices would replicate the loss on each of
        # them: every position in place instead (the trailing padding still costs nothing).
        full = lambda h: tied_xent_sums(h, table, flat_targets, flat_mask)
    else:
        full = lambda h: gathered(h, everything)
    cap = math.ceil(fraction * everything - 1e-9)
    if _exact_rows is not None:
        loss, correct = gathered(flat_hidden, _exact_rows)
    elif not 0 < cap < everything:
        loss, correct = full(flat_hidden)
    else:
        loss, correct = jax.lax.cond(scored <= cap, lambda h: gathered(h, cap), full, flat_hidden)
    return loss, count, correct


def logits_cap_advice(shares: np.ndarray, cap: float) -> str | None:
    """A hint when most batches carry loss at more than `train.logits_fraction` (`cap`) of
    their positions (`shares`, one per batch): those steps gather into a buffer of every
    position (`target_loss_sums`), a larger gather and loop than the cap's."""
    over = float(np.mean(shares > cap))
    if cap >= 1 or over <= 0.5:
        return None
    suggest = min(1.0, math.ceil(shares.max() * 1.25 * 20) / 20)
    return (
        f"[speed] {over:.0%} of the first batches have loss at more than "
        f"train.logits_fraction={cap} of their positions (up to {shares.max():.1%}), so they "
        f"gather every position; train.logits_fraction={suggest:g} would avoid that"
    )
