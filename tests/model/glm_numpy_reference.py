"""An independent NumPy forward pass of GLM (Du et al., ACL 2022), written from the published
architecture and read straight off the Hugging Face tensor names. It does not use
recsys_jax.model; the import test compares our converted model against it.

    h0 = E[tokens] + P[position_ids] + B[block_position_ids]
    per layer:  a = h + Attn(LN1(h));  h = a + MLP(LN2(a))        (pre-LayerNorm)
    logits = LN_final(h) @ E^T                                     (tied output layer)

Attention: the fused projection's 3*hidden outputs are [queries; keys; values], each split into
heads of hidden/heads; scores q.k / sqrt(head_dim); GLM's mask for Part A length `sep`:
lower-triangular plus every key before `sep` visible (bidirectional Part A, causal Part B).
MLP: dense_h_to_4h, tanh-approximated GeLU, dense_4h_to_h. LayerNorm epsilon 1e-5.
"""

from __future__ import annotations

import math

import numpy as np


def layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def linear(x, weights, name):
    """PyTorch Linear: weight [out, in], y = x W^T + b."""
    return x @ weights[name + ".weight"].T + weights[name + ".bias"]


def glm_mask(length, sep):
    mask = np.tril(np.ones((length, length), bool))
    mask[:, :sep] = True
    return mask


def glm_logits(weights, num_heads, tokens, position_ids, block_position_ids, sep, prefix="glm."):
    """One sequence: tokens/position_ids/block_position_ids [L] ints, `sep` = len(Part A).
    `weights`: GLM tensor name -> float64 array. Returns logits [L, vocab] (float64)."""
    w = {k[len(prefix) :]: np.asarray(v, np.float64) for k, v in weights.items()}
    t = "transformer."
    h = (
        w["word_embeddings.weight"][tokens]
        + w[t + "position_embeddings.weight"][position_ids]
        + w[t + "block_position_embeddings.weight"][block_position_ids]
    )
    length, hidden = h.shape
    head_dim = hidden // num_heads
    visible = glm_mask(length, sep)
    layer = 0
    while f"{t}layers.{layer}.input_layernorm.weight" in w:
        p = f"{t}layers.{layer}."
        x = layer_norm(h, w[p + "input_layernorm.weight"], w[p + "input_layernorm.bias"])
        qkv = linear(x, w, p + "attention.query_key_value")
        q, k, v = (
            part.reshape(length, num_heads, head_dim).transpose(1, 0, 2)
            for part in np.split(qkv, 3, axis=-1)
        )
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(head_dim)
        scores = np.where(visible[None], scores, -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(1, 0, 2).reshape(length, hidden)
        h = h + linear(context, w, p + "attention.dense")
        x = layer_norm(
            h, w[p + "post_attention_layernorm.weight"], w[p + "post_attention_layernorm.bias"]
        )
        h = h + linear(gelu_tanh(linear(x, w, p + "mlp.dense_h_to_4h")), w, p + "mlp.dense_4h_to_h")
        layer += 1
    h = layer_norm(h, w[t + "final_layernorm.weight"], w[t + "final_layernorm.bias"])
    return h @ w["word_embeddings.weight"].T


# -- a tiny checkpoint in the public layout ------------------------------------------------------


def random_glm_weights(
    num_layers=2, hidden=32, vocab=61, max_sequence_length=16, seed=0, prefix="glm."
):
    """Random float32 tensors named and shaped exactly as a Hugging Face GLM checkpoint.
    Biases and LayerNorm parameters are random too, so a mis-mapped tensor shows up."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape, std=0.3: (rng.standard_normal(shape) * std).astype(np.float32)
    t = prefix + "transformer."
    w = {
        prefix + "word_embeddings.weight": normal(vocab, hidden),
        t + "position_embeddings.weight": normal(max_sequence_length + 1, hidden),
        t + "block_position_embeddings.weight": normal(max_sequence_length + 1, hidden),
        t + "final_layernorm.weight": 1 + normal(hidden, std=0.1),
        t + "final_layernorm.bias": normal(hidden, std=0.1),
    }
    for i in range(num_layers):
        p = f"{t}layers.{i}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            w[p + norm + ".weight"] = 1 + normal(hidden, std=0.1)
            w[p + norm + ".bias"] = normal(hidden, std=0.1)
        for name, (out, inp) in {
            "attention.query_key_value": (3 * hidden, hidden),
            "attention.dense": (hidden, hidden),
            "mlp.dense_h_to_4h": (4 * hidden, hidden),
            "mlp.dense_4h_to_h": (hidden, 4 * hidden),
        }.items():
            w[p + name + ".weight"] = normal(out, inp, std=1 / math.sqrt(inp))
            w[p + name + ".bias"] = normal(out, std=0.1)
    return w


def glm_config_json(num_layers=2, hidden=32, heads=4, vocab=61, max_sequence_length=16):
    """config.json of a GLM checkpoint (the keys THUDM's GLM models carry)."""
    return {
        "architectures": ["GLMForConditionalGeneration"],
        "model_type": "glm",
        "num_layers": num_layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "vocab_size": vocab,
        "max_sequence_length": max_sequence_length,
        "embedding_dropout_prob": 0.1,
        "attention_dropout_prob": 0.1,
        "output_dropout_prob": 0.1,
        "block_position_encoding": True,
        "checkpoint_activations": False,
        "checkpoint_num_layers": 1,
        "parallel_output": True,
        "relative_encoding": False,
        "output_predict": True,
        "spell_length": None,
        "spell_func": "lstm",
        "attention_scale": 1.0,
        "initializer_range": 0.02,
        "pool_token": "cls",
        "torch_dtype": "float32",
    }


def write_glm_checkpoint(directory, weights, config, shards=1):
    """config.json + model.safetensors (or `shards` files + model.safetensors.index.json)."""
    import json
    from pathlib import Path

    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    if shards == 1:
        save_file(weights, str(directory / "model.safetensors"))
        return directory
    names = sorted(weights)
    weight_map = {}
    for s in range(shards):
        part = names[s::shards]
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: weights[n] for n in part}, str(directory / fname))
        weight_map.update({n: fname for n in part})
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return directory
