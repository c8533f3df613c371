"""GLM transformer: forward pass, tied output, precision, KV cache, presets, the
backward pass's fusion boundaries (the test suite runs on the CPU)."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recsys_jax.model import (
    GLM,
    MODEL_PRESETS,
    ModelConfig,
    fold_item_features,
    param_count,
)

CFG = ModelConfig(
    vocab_size=96,
    num_layers=2,
    num_heads=4,
    hidden_size=32,
    mlp_dim=64,
    max_positions=32,
    max_block_positions=16,
    dropout_rate=0.1,
    attention_dropout_rate=0.1,
)


def make_model(cfg=CFG, seed=0):
    return GLM(cfg, rngs=nnx.Rngs(seed))


def glm_example(prompt, answer):
    """One unpadded GLM example: Part A = prompt (last token plays [gMASK]), Part B = answer.

    Every Part B token takes the mask's position; block positions count 1.. in the span.
    """
    n, k = len(prompt), len(answer)
    return dict(
        tokens=np.array(prompt + answer, np.int32),
        positions=np.array(list(range(n)) + [n - 1] * k, np.int32),
        block_positions=np.array([0] * n + list(range(1, k + 1)), np.int32),
        segment_ids=np.ones(n + k, np.int32),
        part_a=np.array([1] * n + [0] * k, np.int32),
    )


def stack(rows, length, left_pad=()):
    """Pads each row dict to `length` (right, or left for indices in `left_pad`) and stacks."""
    out = {}
    for key in rows[0]:
        padded = []
        for i, row in enumerate(rows):
            pad = length - len(row[key])
            width = (pad, 0) if i in left_pad else (0, pad)
            padded.append(np.pad(row[key], width))
        out[key] = jnp.asarray(np.stack(padded))
    return out


def test_validate_rejects_impossible_configs():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        ModelConfig(hidden_size=30, num_heads=4).validate()
    with pytest.raises(ValueError, match="dtype"):
        ModelConfig(dtype="float16").validate()
    with pytest.raises(ValueError, match="lora_targets"):
        ModelConfig(lora_rank=4, lora_targets=["query", "dense"]).validate()
    with pytest.raises(ValueError, match="dropout_rate"):
        ModelConfig(dropout_rate=1.0).validate()
    with pytest.raises(ValueError, match="num_layers"):
        GLM(ModelConfig(num_layers=0), rngs=nnx.Rngs(0))
    assert dataclasses.replace(CFG, mlp_dim=None, hidden_size=48).ffn_dim == 192


@pytest.mark.slow
def test_forward_shapes_finite_and_packing_equals_separate_rows():
    model = make_model()
    ex1, ex2 = glm_example([5, 6, 7, 8], [9, 10, 11]), glm_example([12, 13, 14], [15, 16])
    packed = {k: np.concatenate([ex1[k], ex2[k] * (2 if k == "segment_ids" else 1)]) for k in ex1}
    packed = stack([packed], 16)  # 12 real tokens + 4 padding slots
    logits = model(**packed)
    assert logits.shape == (1, 16, CFG.vocab_size) and logits.dtype == jnp.float32
    assert bool(jnp.isfinite(logits).all())  # padding rows included
    alone = [model(**stack([ex], len(ex["tokens"])))[0] for ex in (ex1, ex2)]
    np.testing.assert_allclose(logits[0, :12], jnp.concatenate(alone), atol=1e-5)


def test_output_layer_is_tied_to_word_embeddings():
    model = make_model()
    params = jax.tree_util.tree_leaves_with_path(
        nnx.state(model, nnx.Param), is_leaf=lambda x: isinstance(x, nnx.Variable)
    )
    vocab_params = [
        tuple(k.key for k in path)
        for path, v in params
        if "vocab" in v.get_metadata()["out_sharding"]
    ]
    assert vocab_params == [("word_embeddings", "embedding")]  # no separate output kernel
    batch = stack([glm_example([1, 2, 3], [4, 5])], 5)
    before = model(**batch)
    unused = 40  # not an input token: only the output layer can see its row
    # A random direction: the final LayerNorm output has zero mean, so a constant is invisible.
    shift = jax.random.normal(jax.random.key(1), (CFG.hidden_size,))
    table = model.word_embeddings.embedding
    table[...] = table[...].at[unused].add(shift)
    after = model(**batch)
    assert float(jnp.abs(after[..., unused] - before[..., unused]).min()) > 1e-3
    np.testing.assert_allclose(
        np.delete(after, unused, -1), np.delete(before, unused, -1), atol=1e-6
    )


def test_dropout_needs_rngs_and_is_off_when_deterministic():
    model = make_model()
    batch = stack([glm_example([1, 2, 3], [4, 5])], 5)
    eval_logits = model(**batch)
    np.testing.assert_array_equal(eval_logits, model(**batch, deterministic=True))
    train_logits = model(**batch, deterministic=False, rngs=nnx.Rngs(dropout=1))
    assert float(jnp.abs(train_logits - eval_logits).max()) > 1e-4
    with pytest.raises(Exception, match="rngs"):
        model(**batch, deterministic=False)


@pytest.mark.slow
def test_bfloat16_compute_is_close_to_float32():
    model32 = make_model()
    model16 = make_model(dataclasses.replace(CFG, dtype="bfloat16"))
    nnx.update(model16, nnx.state(model32))
    params = jax.tree.leaves(nnx.state(model16, nnx.Param))
    assert all(p.dtype == jnp.float32 for p in params)  # params stay float32
    batch = stack([glm_example([1, 2, 3, 4, 5], [6, 7, 8])], 8)
    logits32, logits16 = model32(**batch), model16(**batch)
    assert logits16.dtype == jnp.float32
    scale = float(jnp.abs(logits32).max())
    err = float(jnp.abs(logits16 - logits32).max())
    print(f"bf16 vs f32 logits: max err {err:.4f}, max |logit| {scale:.3f}")
    assert err < 0.05 * scale, (err, scale)


@pytest.mark.slow
def test_kv_cache_decoding_equals_full_forward_with_padded_prompts():
    model = make_model()
    graphdef, state = nnx.split(model)
    # Prompts of different lengths; row 1 is left-padded, rows 0 and 2 right-padded.
    prompts = [[3, 4, 5, 6, 7], [8, 9, 10], [11, 12, 13, 14]]
    answers = [[1, 20, 21, 22], [1, 23, 24, 25], [1, 26, 27, 28]]  # 1 plays [sop]
    examples = [glm_example(p, a) for p, a in zip(prompts, answers)]
    prompt_len, steps = 6, 4
    prompt_rows = [{k: v[: len(p)] for k, v in ex.items()} for ex, p in zip(examples, prompts)]
    prompt = stack(prompt_rows, prompt_len, left_pad=(1,))
    parts_b = [{k: v[len(p) :] for k, v in ex.items()} for ex, p in zip(examples, prompts)]

    @jax.jit
    def prefill_and_decode(state, prompt, tokens, positions, block_positions):
        model = nnx.merge(graphdef, state)
        cache = model.init_cache(len(prompts), prompt_len + steps)
        prompt_logits, cache = model.prefill(**prompt, cache=cache)

        def step(t, carry):  # traced slot index, as in a while_loop beam search
            cache, out = carry
            logits, cache = model.decode_step(
                tokens[:, t, None],
                positions[:, t, None],
                block_positions[:, t, None],
                cache,
                prompt_len + t,
            )
            return cache, out.at[:, t].set(logits[:, 0])

        out = jnp.zeros((len(prompts), steps, CFG.vocab_size))
        _, out = jax.lax.fori_loop(0, steps, step, (cache, out))
        return prompt_logits, out

    part_b = {k: jnp.asarray(np.stack([b[k] for b in parts_b])) for k in parts_b[0]}
    prompt_logits, decoded = prefill_and_decode(
        state, prompt, part_b["tokens"], part_b["positions"], part_b["block_positions"]
    )
    for i, (ex, p) in enumerate(zip(examples, prompts)):
        full = model(**stack([ex], len(ex["tokens"])))[0]
        start = prompt_len - len(p) if i == 1 else 0
        np.testing.assert_allclose(
            prompt_logits[i, start : start + len(p)],
            full[: len(p)],
            atol=1e-5,
            err_msg=f"prefill row {i}",
        )
        np.testing.assert_allclose(decoded[i], full[len(p) :], atol=1e-5, err_msg=f"decode row {i}")


@pytest.mark.slow
def test_shared_prompt_decoding_equals_a_copied_cache():
    """K continuations per prompt row reading one prefilled prompt (`decode_step_shared`) give
    the logits of `decode_step` on the prompt cache copied K times."""
    model = make_model()
    graphdef, state = nnx.split(model)
    prompts, k, steps, prompt_len = [[3, 4, 5, 6, 7], [8, 9, 10]], 3, 3, 6
    rows = [{key: v[: len(p)] for key, v in glm_example(p, [1]).items()} for p in prompts]
    prompt = stack(rows, prompt_len, left_pad=(1,))
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(2, CFG.vocab_size, (len(prompts) * k, steps)), jnp.int32)
    positions = jnp.repeat(jnp.asarray([[4], [2]]), k, axis=0)
    blocks = jnp.arange(1, steps + 1)[None].repeat(len(prompts) * k, 0)

    @jax.jit
    def both(state, prompt, tokens):
        model = nnx.merge(graphdef, state)
        _, prefix = model.prefill(**prompt, cache=model.init_cache(len(prompts), prompt_len))
        copied = model.init_cache(len(prompts), prompt_len + steps)
        _, copied = model.prefill(**prompt, cache=copied)
        copied = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), copied)
        own = model.init_cache(len(prompts) * k, steps)
        out_shared, out_copied = [], []
        for t in range(steps):
            args = (tokens[:, t, None], positions, blocks[:, t, None])
            a, own = model.decode_step_shared(*args, prefix, own, t)
            b, copied = model.decode_step(*args, copied, prompt_len + t)
            out_shared.append(a)
            out_copied.append(b)
        return jnp.concatenate(out_shared, 1), jnp.concatenate(out_copied, 1)

    shared, copied = both(state, prompt, tokens)
    np.testing.assert_allclose(shared, copied, atol=1e-5)
    # Rows continuing the same prompt with different tokens get different logits.
    assert not np.allclose(shared[0, 1:], shared[1, 1:])


def test_prefill_rejects_prompt_longer_than_cache():
    model = make_model()
    batch = stack([glm_example([1, 2, 3], [4])], 4)
    with pytest.raises(ValueError, match="exceeds"):
        model.prefill(**batch, cache=model.init_cache(1, 3))


def test_preset_parameter_counts():
    counts = {name: param_count(MODEL_PRESETS[name]) for name in ("tiny", "small", "base")}
    print({name: f"{n / 1e6:.1f}M" for name, n in counts.items()})
    assert counts["tiny"] < 10e6
    assert 55e6 < counts["small"] < 65e6  # P5-small: ~60M with a 32k vocabulary
    assert 200e6 < counts["base"] < 240e6  # P5-base: ~220M


@pytest.mark.slow
def test_remat_gives_the_same_train_step():
    """`remat=True` recomputes blocks in the backward pass: the compiled train step (model
    merged inside the trace) gives the same loss and update; with dropout it runs too."""
    import optax

    from recsys_jax.training.step import init_train_state, make_train_step, split_model

    batch = stack([glm_example([5, 6, 7, 8], [9, 10]), glm_example([11, 12, 13], [14, 15, 16])], 10)
    batch["targets"] = jnp.roll(batch["tokens"], -1, axis=1)
    batch["loss_mask"] = (1 - batch["part_a"]).astype(jnp.float32) * (batch["segment_ids"] > 0)
    tx = optax.sgd(0.1)

    def one_step(**changes):
        model = make_model(dataclasses.replace(CFG, lora_rank=2, **changes))
        graphdef, params, frozen = split_model(model, lora_only=False)
        step = jax.jit(make_train_step(graphdef, tx, 1, lambda s: 0.1))
        return step(init_train_state(params, tx, 0), frozen, batch)

    no_dropout = dict(dropout_rate=0.0, attention_dropout_rate=0.0)
    (plain, m_plain), (remat, m_remat) = one_step(**no_dropout), one_step(remat=True, **no_dropout)
    np.testing.assert_allclose(m_remat["loss"], m_plain["loss"], rtol=1e-6)
    np.testing.assert_allclose(m_remat["grad_norm"], m_plain["grad_norm"], rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        plain["params"],
        remat["params"],
    )
    _, with_dropout = one_step(remat=True)
    assert np.isfinite(with_dropout["loss"]) and with_dropout["loss"] != m_plain["loss"]


@pytest.mark.slow
def test_folding_item_features_keeps_the_logits_and_drops_the_product():
    cfg = dataclasses.replace(CFG, item_feature_dim=8)
    model = make_model(cfg)
    emb = model.word_embeddings
    emb.features[...] = jax.random.normal(jax.random.key(1), emb.features.shape)
    emb.projection[...] = jax.random.normal(jax.random.key(2), emb.projection.shape)
    batch = stack([glm_example([5, 9, 11, 3], [40, 41]), glm_example([7, 2], [60])], 6)
    folded = fold_item_features(model)
    assert folded.cfg.item_feature_dim == 0 and model.cfg.item_feature_dim == 8
    assert not hasattr(folded.word_embeddings, "features")
    np.testing.assert_allclose(folded(**batch), model(**batch), rtol=1e-5, atol=1e-5)
    # Its state is exactly a feature-free model's: a plain GLM(folded.cfg) takes it.
    plain = make_model(folded.cfg)
    nnx.update(plain, nnx.state(folded))
    np.testing.assert_allclose(plain(**batch), model(**batch), rtol=1e-5, atol=1e-5)
    assert fold_item_features(plain) is plain


def _hidden_states_gradient_hlo(cfg):
    """(params, the optimised HLO XLA's CPU compiler builds for the gradient of the hidden
    states of a model with `cfg`)."""
    graphdef, params = nnx.split(GLM(cfg, rngs=nnx.Rngs(0)))
    ids, ones = jnp.zeros((2, 16), jnp.int32), jnp.ones((2, 16), jnp.int32)

    def loss(p):
        return nnx.merge(graphdef, p).hidden_states(ids, ids, ids, ones, ones).sum()

    return params, jax.jit(jax.grad(loss)).lower(params).compile().as_text()


def _widest_backward_fusion(layers: int) -> int:
    """Operands of the largest fusion in the hidden states' gradient of a `layers`-deep model."""
    _, hlo = _hidden_states_gradient_hlo(dataclasses.replace(CFG, num_layers=layers))
    fusions = re.finditer(r"= \S+ fusion\(([^)]*)\)", hlo)
    return max(len(re.findall(r"%[\w.\-]+", f.group(1))) for f in fusions)


def test_backward_fusions_do_not_grow_with_depth():
    # Without a boundary per block, the residual stream's gradient chain was fused (and
    # recomputed) into every layer's weight-gradient copy: 47 operands at 2 layers, 120 at 6,
    # 194 at 10, and a backward pass 5x the forward for 14 layers.
    assert _widest_backward_fusion(6) == _widest_backward_fusion(2)


def test_backward_pass_reads_the_kernels_in_place():
    # With N-D kernels ([embed, 3, heads, head_dim] and [heads, head_dim, embed]) in N-D
    # products, XLA:CPU copied each of them into another layout for the gradient products (and
    # ran those ~30 % slower); as 2-D products the matmul library reads them as they are.
    params, hlo = _hidden_states_gradient_hlo(CFG)
    kernels = {
        tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
        if "kernel" in jax.tree_util.keystr(path) and leaf.ndim > 2
    }
    assert kernels  # the qkv and output-projection kernels
    copied = {
        tuple(int(d) for d in m.group(1).split(","))
        for m in re.finditer(r"= f32\[([\d,]+)\]\{[\d,]*\} copy\(", hlo)
    }
    assert not kernels & copied
