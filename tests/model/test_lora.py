"""LoRA: starts equal to the base, trains adapters only, merges into the base for export."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from recsys_jax.model import BASE_PARAMS, GLM, LoRAParam, ModelConfig, merge_lora

BASE_CFG = ModelConfig(
    vocab_size=96,
    num_layers=2,
    num_heads=4,
    hidden_size=32,
    mlp_dim=64,
    max_positions=32,
    max_block_positions=16,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
)
CFG = dataclasses.replace(BASE_CFG, lora_rank=4, lora_alpha=8.0, lora_dropout=0.1)


def batch(seed=0, rows=2, length=8):
    rng = np.random.default_rng(seed)
    n_a = length // 2
    return dict(
        tokens=jnp.asarray(rng.integers(2, 96, (rows, length)), jnp.int32),
        positions=jnp.tile(jnp.minimum(jnp.arange(length), n_a - 1), (rows, 1)),
        block_positions=jnp.tile(jnp.maximum(jnp.arange(length) - n_a + 1, 0), (rows, 1)),
        segment_ids=jnp.ones((rows, length), jnp.int32),
        part_a=jnp.tile((jnp.arange(length) < n_a).astype(jnp.int32), (rows, 1)),
    )


def paths(state):
    return sorted(jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(state))


def test_adapters_sit_on_the_configured_targets_only():
    model = GLM(CFG, rngs=nnx.Rngs(0))
    lora_paths = paths(nnx.state(model, LoRAParam))
    assert len(lora_paths) == 2 * 4 * CFG.num_layers  # a, b x 4 targets x layers
    assert all(".lora." in p or "['lora']" in p for p in lora_paths)
    only_mlp = GLM(dataclasses.replace(CFG, lora_targets=("dense_h_to_4h",)), rngs=nnx.Rngs(0))
    assert all("dense_h_to_4h" in p for p in paths(nnx.state(only_mlp, LoRAParam)))
    assert paths(nnx.state(GLM(BASE_CFG, rngs=nnx.Rngs(0)), LoRAParam)) == []


def test_adapted_model_starts_equal_to_its_base():
    adapted = GLM(CFG, rngs=nnx.Rngs(0))
    base = GLM(BASE_CFG, rngs=nnx.Rngs(1))
    nnx.update(base, nnx.state(adapted, BASE_PARAMS))  # same tree as a rank-0 model
    np.testing.assert_array_equal(adapted(**batch()), base(**batch()))


def train_adapters(model, steps=3):
    optimizer = nnx.Optimizer(model, optax.adamw(1e-2), wrt=LoRAParam)

    @nnx.jit
    def step(model, optimizer, data, key):
        def loss_fn(model):
            logits = model(**data, deterministic=False, rngs=nnx.Rngs(dropout=key))
            targets = jnp.roll(data["tokens"], -1, axis=1)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, LoRAParam))(model)
        optimizer.update(model, grads)
        return loss

    return [float(step(model, optimizer, batch(), jax.random.key(i))) for i in range(steps)]


@pytest.mark.slow
def test_training_adapters_leaves_base_weights_bit_identical():
    model = GLM(CFG, rngs=nnx.Rngs(0))
    base_before = jax.tree.map(np.array, nnx.state(model, BASE_PARAMS))
    lora_before = jax.tree.map(np.array, nnx.state(model, LoRAParam))
    losses = train_adapters(model, steps=4)
    print("LoRA losses", losses)
    jax.tree.map(
        np.testing.assert_array_equal,
        base_before,
        jax.tree.map(np.array, nnx.state(model, BASE_PARAMS)),
    )
    changed = jax.tree.map(
        lambda a, b: bool((a != np.asarray(b)).any()), lora_before, nnx.state(model, LoRAParam)
    )
    assert all(jax.tree.leaves(changed)), changed  # both A and B of every adapter moved
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_merged_model_equals_adapted_model_and_has_the_base_layout():
    model = GLM(CFG, rngs=nnx.Rngs(0))
    train_adapters(model, steps=2)  # B != 0, so the merge really changes the kernels
    merged = merge_lora(model)
    data = batch(seed=1)
    np.testing.assert_allclose(merged(**data), model(**data), atol=1e-5)
    assert paths(nnx.state(merged, LoRAParam)) == []
    assert merged.cfg.lora_rank == 0
    rebuilt = GLM(merged.cfg, rngs=nnx.Rngs(0))  # export/import round trip is structural
    assert paths(nnx.state(rebuilt)) == paths(nnx.state(merged))
    assert paths(nnx.state(model, LoRAParam))  # the adapted model is left as it was
    kernel = ("layers", 0, "attention", "query_key_value", "kernel")
    before, after = model, merged
    for key in kernel:
        before, after = (
            (before[key], after[key])
            if isinstance(key, int)
            else (getattr(before, key), getattr(after, key))
        )
    assert not np.array_equal(before[...], after[...])
