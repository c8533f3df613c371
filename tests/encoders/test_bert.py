import importlib.util
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recsys_jax.encoders.bert import BertConfig, load_bert
from recsys_jax.encoders.bundled import bundled_minilm_path
from recsys_jax.encoders.text_embeddings import TextEncoder

_spec = importlib.util.spec_from_file_location(
    "tiny_bert", Path(__file__).with_name("tiny_bert.py")
)
tiny_bert = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_bert)


def beauty_titles(n=200, seed=0):
    """A seeded sample of Beauty titles, the longest title (213 word pieces) among them."""
    from recsys_jax.data.readers import read_embedded_beauty

    titles = read_embedded_beauty().catalog.titles
    longest = max(range(len(titles)), key=lambda i: len(titles[i]))
    rest = np.random.default_rng(seed).choice(
        [i for i in range(len(titles)) if i != longest], size=n - 1, replace=False
    )
    return [titles[longest]] + [titles[i] for i in rest]


@pytest.mark.slow
def test_minilm_matches_sentence_transformers_on_200_beauty_titles(monkeypatch):
    """Encoder parity: same weights, cosine > 0.999 for every title."""
    try:
        folder = bundled_minilm_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    # Offline: sentence-transformers reads the local folder and never asks a hub.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    sentence_transformers = pytest.importorskip("sentence_transformers")

    titles = beauty_titles()
    ours = TextEncoder(folder).encode(titles, batch_size=32)
    reference = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    theirs = reference.encode(titles, batch_size=64, convert_to_numpy=True)

    assert ours.shape == theirs.shape == (200, 384)
    cosine = (ours * theirs).sum(1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)
    )
    worst = int(np.argmin(cosine))
    assert np.all(cosine > 0.999), f"cosine {cosine[worst]:.6f} for {titles[worst]!r}"
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # Normalize module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_bert.write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def _run(model, lengths=(5, 3)):
    ids = np.zeros((len(lengths), max(lengths)), np.int32)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = np.arange(7, 7 + n)
        mask[row, :n] = 1
    return np.asarray(_forward(model, jnp.asarray(ids), jnp.asarray(mask)))


@nnx.jit  # one compile per shape instead of one per operation
def _forward(model, ids, mask):
    return model(ids, mask)


def test_tiny_folder_loads_with_or_without_the_bert_prefix(tiny, tmp_path):
    model = load_bert(tiny)
    assert model.cfg == BertConfig.from_folder(tiny)
    assert model.cfg.num_layers == 2 and model.cfg.hidden_size == 32
    out = _run(model)
    assert out.shape == (2, 5, 32) and np.all(np.isfinite(out))
    # A checkpoint saved from a head model (BertForMaskedLM, ...) names tensors `bert.*`.
    prefixed = tiny_bert.write_tiny_bert(tmp_path / "prefixed", prefix="bert.")
    np.testing.assert_array_equal(_run(load_bert(prefixed)), out)


def test_padding_does_not_change_real_tokens(tiny):
    model = load_bert(tiny)
    alone = _run(model, lengths=(3,))
    padded = _run(model, lengths=(3, 6))
    np.testing.assert_allclose(padded[0, :3], alone[0], atol=1e-5)


@pytest.mark.parametrize(
    "name", ["encoder.layer.1.attention.self.key.weight", "embeddings.token_type_embeddings.weight"]
)
def test_missing_tensor_is_named(tmp_path, name):
    folder = tiny_bert.write_tiny_bert(tmp_path, drop=name)
    with pytest.raises(ValueError, match=f"no tensor '{name}'"):
        load_bert(folder)


def test_misshaped_tensor_is_named_with_both_shapes(tmp_path):
    name = "encoder.layer.0.intermediate.dense.weight"  # [intermediate, hidden] = [64, 32]
    folder = tiny_bert.write_tiny_bert(tmp_path, reshape=(name, (64, 16)))
    with pytest.raises(ValueError, match=rf"'{name}' has shape \(64, 16\).*needs \(64, 32\)"):
        load_bert(folder)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"model_type": "roberta"}, "model_type 'roberta' is not supported"),
        ({"hidden_act": "swish"}, "hidden_act 'swish' is not supported"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
        ({"num_attention_heads": 5}, "not divisible"),
    ],
)
def test_unsupported_configs_are_refused(tmp_path, override, message):
    folder = tiny_bert.write_tiny_bert(tmp_path, config_overrides=override)
    with pytest.raises(ValueError, match=message):
        load_bert(folder)


def test_missing_files_say_what_a_folder_holds(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_bert(tmp_path)
    folder = tiny_bert.write_tiny_bert(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_bert(folder)
    config = json.loads((folder / "config.json").read_text())
    del config["hidden_size"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no 'hidden_size'"):
        BertConfig.from_folder(folder)
