"""GLM checkpoint import: a tiny checkpoint in the exact public layout converts, and our model
on it equals an independent NumPy GLM; broken checkpoints fail naming the tensor."""

import importlib.util
import json
from pathlib import Path

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from recsys_jax.model import GLM
from recsys_jax.model.glm_import import (
    GLMImportError,
    load_glm_checkpoint,
    read_glm_config,
    resize_vocabulary,
)
from recsys_jax.run.checkpoints import assign_params


def _load_reference():
    path = Path(__file__).with_name("glm_numpy_reference.py")
    spec = importlib.util.spec_from_file_location("glm_numpy_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _load_reference()
HEADS = 4


def _glm_inputs(rng, length, sep, vocab):
    """One GLM example: Part A of `sep` tokens (positions 0.., block 0), then Part B spans,
    each `[sop] t1..tk` at its mask's position with block positions 1..k+1."""
    tokens = rng.integers(0, vocab, length)
    positions = np.minimum(np.arange(length), sep - 1)
    positions[sep:] = rng.integers(0, sep, 1)  # every token of a span: its mask's position
    block = np.zeros(length, np.int64)
    block[sep:] = np.arange(1, length - sep + 1)
    return tokens, positions, block


def _checkpoint(tmp_path, **kw):
    weights = ref.random_glm_weights(**kw)
    config = ref.glm_config_json(num_layers=kw.get("num_layers", 2), heads=HEADS)
    return weights, ref.write_glm_checkpoint(tmp_path / "glm", weights, config)


@pytest.mark.slow
def test_converted_model_equals_the_numpy_glm(tmp_path):
    weights, path = _checkpoint(tmp_path)
    cfg, params = load_glm_checkpoint(path)
    assert (
        cfg.num_layers,
        cfg.hidden_size,
        cfg.num_heads,
        cfg.vocab_size,
        cfg.ffn_dim,
        cfg.max_positions,
        cfg.max_block_positions,
    ) == (2, 32, HEADS, 61, 128, 17, 17)
    model = GLM(cfg, rngs=nnx.Rngs(1))
    assign_params(model, params)

    rng = np.random.default_rng(0)
    length, seps = 12, (7, 4, 11)
    rows = [_glm_inputs(rng, length, sep, cfg.vocab_size) for sep in seps]
    tokens, positions, block = (np.stack(x).astype(np.int32) for x in zip(*rows))
    part_a = (np.arange(length)[None] < np.array(seps)[:, None]).astype(np.int32)
    got = np.asarray(
        model(
            jnp.asarray(tokens),
            jnp.asarray(positions),
            jnp.asarray(block),
            jnp.ones_like(jnp.asarray(tokens)),
            jnp.asarray(part_a),
        )
    )
    for row, sep in enumerate(seps):
        expected = ref.glm_logits(weights, HEADS, tokens[row], positions[row], block[row], sep)
        assert np.abs(expected).max() > 1.0  # a real signal, not a near-zero output
        np.testing.assert_allclose(got[row], expected, atol=1e-4, rtol=1e-4)


def test_sharded_unprefixed_half_precision_checkpoints_read_the_same(tmp_path):
    weights, path = _checkpoint(tmp_path)
    _, params = load_glm_checkpoint(path)
    # GLMModel saves without the "glm." prefix; big checkpoints come in shards; and fp16/bf16.
    for dtype in (np.float16, ml_dtypes.bfloat16):
        other = {k[len("glm.") :]: v.astype(dtype) for k, v in weights.items()}
        folder = ref.write_glm_checkpoint(
            tmp_path / str(np.dtype(dtype)), other, ref.glm_config_json(heads=HEADS), shards=3
        )
        assert (folder / "model.safetensors.index.json").exists()
        _, again = load_glm_checkpoint(folder)
        kernel = again["layers"]["1"]["attention"]["query_key_value"]["kernel"]
        assert kernel.dtype == np.float32
        expected = params["layers"]["1"]["attention"]["query_key_value"]["kernel"]
        np.testing.assert_allclose(kernel, expected, atol=2e-2)


@pytest.mark.parametrize(
    "break_it, message",
    [
        (
            lambda w: w.pop("glm.transformer.layers.1.attention.dense.bias"),
            "missing tensors: glm.transformer.layers.1.attention.dense.bias",
        ),
        (
            lambda w: w.pop("glm.transformer.block_position_embeddings.weight"),
            "missing tensors: glm.transformer.block_position_embeddings.weight",
        ),
        (
            lambda w: w.update(
                {
                    "glm.transformer.layers.2.mlp.dense_h_to_4h.weight": np.zeros(
                        (128, 32), np.float32
                    )
                }
            ),
            "unexpected tensors (not part of the GLM architecture): "
            "glm.transformer.layers.2.mlp.dense_h_to_4h.weight",
        ),
        (
            lambda w: w.update(
                {
                    "glm.transformer.layers.0.mlp.dense_4h_to_h.weight": np.zeros(
                        (32, 96), np.float32
                    )
                }
            ),
            "glm.transformer.layers.0.mlp.dense_4h_to_h.weight: shape (32, 96), expected (32, 128)",
        ),
        (
            lambda w: w.update(
                {"glm.transformer.position_embeddings.weight": np.zeros((16, 32), np.float32)}
            ),
            "glm.transformer.position_embeddings.weight: shape (16, 32), expected (17, 32)",
        ),
        (
            lambda w: w.update(
                {"glm.transformer.layers.0.input_layernorm.weight": np.ones(32, np.int32)}
            ),
            (
                "glm.transformer.layers.0.input_layernorm.weight: "
                "dtype int32, expected a floating type"
            ),
        ),
    ],
)
def test_broken_checkpoints_fail_naming_the_tensor(tmp_path, break_it, message):
    weights = ref.random_glm_weights()
    break_it(weights)
    path = ref.write_glm_checkpoint(tmp_path / "glm", weights, ref.glm_config_json(heads=HEADS))
    with pytest.raises(GLMImportError) as err:
        load_glm_checkpoint(path)
    assert message in str(err.value)


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(GLMImportError, match="config.json: not found"):
        read_glm_config(tmp_path)
    config = ref.glm_config_json()
    del config["hidden_size"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(GLMImportError, match=r"missing keys \['hidden_size'\]"):
        read_glm_config(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps({**ref.glm_config_json(), "block_position_encoding": False})
    )
    with pytest.raises(GLMImportError, match="block_position_encoding is false"):
        read_glm_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(ref.glm_config_json()))
    with pytest.raises(GLMImportError, match="no weights found"):
        load_glm_checkpoint(tmp_path)


def test_resize_vocabulary_keeps_pretrained_rows_and_adds_distinct_ones():
    rng = np.random.default_rng(0)
    table = (rng.standard_normal((50, 8)) * 0.5 + 2.0).astype(np.float32)
    grown = resize_vocabulary({"word_embeddings": {"embedding": table}, "other": 1}, 56)
    new = grown["word_embeddings"]["embedding"]
    assert new.shape == (56, 8) and grown["other"] == 1
    assert np.array_equal(new[:50], table)
    assert len({row.tobytes() for row in new[50:]}) == 6  # distinct new rows
    assert abs(new[50:].mean() - table.mean()) < 0.5  # on the pretrained rows' scale
    with pytest.raises(GLMImportError, match="cannot shrink"):
        resize_vocabulary({"word_embeddings": {"embedding": table}}, 40)


def test_pytorch_state_dicts_read_like_safetensors(tmp_path, monkeypatch):
    """pytorch_model.bin (bfloat16, as GLM checkpoints ship) and a sharded .bin index."""
    import torch

    weights, path = _checkpoint(tmp_path)
    _, params = load_glm_checkpoint(path)
    config = ref.glm_config_json(heads=HEADS)
    single = ref.write_glm_checkpoint(tmp_path / "bin", {}, config, shards=1)
    (single / "model.safetensors").unlink()
    torch.save(
        {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in weights.items()},
        single / "pytorch_model.bin",
    )
    names = sorted(weights)
    sharded = ref.write_glm_checkpoint(tmp_path / "bin_sharded", {}, config, shards=1)
    (sharded / "model.safetensors").unlink()
    for s, part in enumerate((names[::2], names[1::2])):
        torch.save({n: torch.from_numpy(weights[n]) for n in part}, sharded / f"part{s}.bin")
    (sharded / "pytorch_model.bin.index.json").write_text(
        json.dumps({"weight_map": {n: f"part{i % 2}.bin" for i, n in enumerate(names)}})
    )
    for folder, atol in ((single, 2e-2), (sharded, 0.0)):
        _, again = load_glm_checkpoint(folder)
        np.testing.assert_allclose(
            again["layers"]["0"]["mlp"]["dense_4h_to_h"]["kernel"],
            params["layers"]["0"]["mlp"]["dense_4h_to_h"]["kernel"],
            atol=atol,
        )
    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # torch not installed
    with pytest.raises(GLMImportError, match=r"pip install 'recsys_jax\[torch\]'"):
        load_glm_checkpoint(single)
