"""Loss, optimizer and the compiled train / eval steps, as pure functions of explicit state.

The model is split once into (graphdef, trainable, frozen): `trainable` is every parameter, or
only the LoRA adapters with `train.lora_only`. The train state is a plain dict pytree
{"params", "opt_state", "step", "rng"} that Orbax saves and `jax.jit` shards and donates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from recsys_jax.masking.batching import MODEL_INPUTS
from recsys_jax.model.layers import FrozenParam
from recsys_jax.model.lora import LoRAParam
from recsys_jax.training.loss import target_loss_sums


def learning_rate_schedule(cfg) -> optax.Schedule:
    """Linear warm-up to `learning_rate`, then cosine decay to `learning_rate * end_lr_ratio`."""
    warmup = min(cfg.warmup_steps, max(cfg.steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(cfg.steps, warmup + 1),
        end_value=cfg.learning_rate * cfg.end_lr_ratio,
    )


def make_optimizer(cfg) -> optax.GradientTransformation:
    """AdamW with optional global-norm clipping; no weight decay on vectors (biases, LayerNorm)."""
    decay_mask = lambda params: jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)
    clip = (
        optax.clip_by_global_norm(cfg.grad_clip) if cfg.grad_clip is not None else optax.identity()
    )
    return optax.chain(
        clip,
        optax.adamw(
            learning_rate_schedule(cfg),
            b1=cfg.b1,
            b2=cfg.b2,
            weight_decay=cfg.weight_decay,
            mask=decay_mask,
        ),
    )


def split_model(model, lora_only: bool):
    """-> (graphdef, trainable State, frozen State)."""
    trainable = LoRAParam if lora_only else nnx.All(nnx.Param, nnx.Not(FrozenParam))
    graphdef, params, frozen = nnx.split(model, trainable, ...)
    return graphdef, params, frozen


def model_loss(graphdef, params, frozen, batch, dropout_key, logits_fraction: float = 1.0):
    model = nnx.merge(graphdef, params, frozen)
    deterministic = dropout_key is None
    hidden = model.hidden_states(
        *(batch[k] for k in MODEL_INPUTS),
        deterministic=deterministic,
        rngs=None if deterministic else nnx.Rngs(dropout=dropout_key),
    )
    return target_loss_sums(
        hidden, model.word_embeddings.table(), batch["targets"], batch["loss_mask"], logits_fraction
    )


def dropout_key(rng_data: jax.Array, step: jax.Array) -> jax.Array:
    """This step's dropout key: the run's key folded with the step (so a resumed run draws the
    same masks). Each dropout site derives its own key from it and hashes element indices with
    it (`model/dropout.py`)."""
    return jax.random.fold_in(jax.random.wrap_key_data(rng_data), step)


@jax.named_scope("optimizer")  # a name profiles group by (scripts/profile_step.py)
def apply_update(tx: optax.GradientTransformation, params, opt_state, grads):
    """One optimizer update: -> (new params, new optimizer state)."""
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def init_train_state(params, tx: optax.GradientTransformation, seed: int) -> dict:
    return {
        "params": params,
        "opt_state": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.key_data(jax.random.key(seed)),
    }


def make_train_step(
    graphdef,
    tx: optax.GradientTransformation,
    grad_accum: int,
    schedule: Callable,
    logits_fraction: float = 1.0,
) -> Callable:
    """`step(state, frozen, batch) -> (state, metrics)`; the batch's leading dim splits into
    `grad_accum` micro-batches whose gradients are summed before one update. The loss is the
    mean over all target tokens of the whole batch, whatever `grad_accum` is.
    `logits_fraction`: see `target_loss_sums` (`train.logits_fraction`)."""

    def step(state, frozen, batch):
        key = dropout_key(state["rng"], state["step"])
        count = jnp.sum(batch["loss_mask"])
        denom = jnp.maximum(count, 1.0)

        def micro_grads(micro, index):
            # The gradient of the batch mean directly: no extra pass to rescale it.
            def mean_loss(params):
                total, _, correct = model_loss(
                    graphdef,
                    params,
                    frozen,
                    micro,
                    jax.random.fold_in(key, index),
                    logits_fraction,
                )
                return total / denom, (total, correct)

            (_, (total, correct)), grads = jax.value_and_grad(mean_loss, has_aux=True)(
                state["params"]
            )
            return grads, total, correct

        if grad_accum == 1:  # no loop: the gradients need no accumulator
            grads, total, correct = micro_grads(batch, 0)
        else:
            micro = jax.tree.map(lambda x: x.reshape(grad_accum, -1, *x.shape[1:]), batch)

            def body(carry, inputs):
                grads_acc, total_acc, correct_acc = carry
                grads, total, correct = micro_grads(inputs[1], inputs[0])
                grads_acc = jax.tree.map(jnp.add, grads_acc, grads)
                return (grads_acc, total_acc + total, correct_acc + correct), None

            zeros = jax.tree.map(jnp.zeros_like, state["params"])
            (grads, total, correct), _ = jax.lax.scan(
                body, (zeros, jnp.zeros(()), jnp.zeros(())), (jnp.arange(grad_accum), micro)
            )
        params, opt_state = apply_update(tx, state["params"], state["opt_state"], grads)
        metrics = {
            "loss": total / denom,
            "accuracy": correct / denom,
            "target_tokens": count,
            "grad_norm": optax.tree.norm(grads),
            "lr": schedule(state["step"]),
        }
        new_state = {
            "params": params,
            "opt_state": opt_state,
            "step": state["step"] + 1,
            "rng": state["rng"],
        }
        return new_state, metrics

    return step


def make_eval_step(graphdef, logits_fraction: float = 1.0) -> Callable:
    """`eval_step(params, frozen, batch) -> (loss sum, target tokens, correct)`; no dropout."""

    def eval_step(params, frozen, batch):
        return model_loss(graphdef, params, frozen, batch, None, logits_fraction)

    return eval_step


def count_params(tree: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(tree))
