"""One vector per catalog item from its text (title + categories): TF-IDF or a pretrained encoder.

    x = item_embeddings(catalog, "tfidf", fit_items=train_items)  # sparse [n, vocabulary]
    x = item_embeddings(catalog, "encoder")                       # dense [n, 384], bundled MiniLM
    x = item_embeddings(catalog, "encoder", encoder_path="my/bert/folder")

Every catalog item is embedded, held-out ones included (an index must spell every item), but
nothing is FIT on held-out items (docs/design.md, leakage rules): the TF-IDF vocabulary and idf come
from the text of `fit_items` (the training items) only, and the encoder is pretrained elsewhere and
not fit on our data at all, so an item's encoder vector depends on its own text alone.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from recsys_jax.data.schema import Catalog, DataError
from recsys_jax.encoders.bundled import bundled_minilm_path, cache_root

METHODS = ("tfidf", "encoder")


def item_text(title: str, attributes: Sequence[str]) -> str:
    """An item's text: its title, then its attribute strings (categories) in parentheses.

    TF-IDF ignores the punctuation; the encoder reads it as a title with its categories.
    """
    attributes = [str(a) for a in attributes if str(a)]
    return f"{title} ({', '.join(attributes)})" if attributes else str(title)


def catalog_texts(catalog: Catalog) -> list[str]:
    return [item_text(t, a) for t, a in zip(catalog.titles, catalog.attributes)]


def fit_text_vectorizer(catalog: Catalog, train_items: np.ndarray) -> TfidfVectorizer:
    """TF-IDF (unigrams + bigrams, sublinear tf) fit on the text of training items only."""
    vectorizer = TfidfVectorizer(
        lowercase=True,
        strip_accents="unicode",
        token_pattern=r"(?u)\b\w+\b",
        ngram_range=(1, 2),
        sublinear_tf=True,
        dtype=np.float32,
    )
    texts = [item_text(catalog.titles[i], catalog.attributes[i]) for i in train_items]
    try:
        vectorizer.fit(texts)
    except ValueError as err:  # e.g. every training item has empty text
        raise DataError(
            f"cannot build TF-IDF features from the training items' titles and attributes ({err})"
        ) from None
    return vectorizer


def text_features(catalog: Catalog, vectorizer: TfidfVectorizer) -> sp.csr_matrix:
    """[num_items, vocabulary] TF-IDF rows for every catalog item."""
    return vectorizer.transform(catalog_texts(catalog)).tocsr()


def _cache_file(folder: Path, texts: Sequence[str]) -> Path:
    """Where the embeddings of `texts` by the encoder in `folder` are cached.

    The key covers the folder's small files by content, the weights by path, size and
    modification time, and every text, so any change makes a new entry.
    """
    digest = hashlib.sha256(str(folder.resolve()).encode())
    for name in (
        "config.json",
        "tokenizer.json",
        "sentence_bert_config.json",
        "modules.json",
        "1_Pooling/config.json",
    ):
        if (folder / name).is_file():
            digest.update(name.encode() + (folder / name).read_bytes())
    weights = (folder / "model.safetensors").stat()
    digest.update(f"{weights.st_size}:{weights.st_mtime_ns}".encode())
    for text in texts:
        digest.update(text.encode() + b"\0")
    return cache_root() / "item_embeddings" / f"{digest.hexdigest()[:32]}.npy"


def encoder_embeddings(
    catalog: Catalog,
    encoder_path: str | os.PathLike | None = None,
    *,
    batch_size: int = 64,
    progress: bool = False,
    cache: bool = True,
) -> np.ndarray:
    """[num_items, hidden] float32 sentence embeddings of every item's text.

    `encoder_path`: a Hugging Face BERT folder; None = the bundled all-MiniLM-L6-v2.
    Embedding a 12k-item catalog takes minutes on a CPU, so the result is cached on disk
    (`cache_root()/item_embeddings`, `$RECSYS_JAX_CACHE` moves it) unless `cache=False`.
    """
    from recsys_jax.encoders.text_embeddings import TextEncoder

    folder = Path(bundled_minilm_path() if encoder_path is None else encoder_path)
    texts = catalog_texts(catalog)
    path = (
        _cache_file(folder, texts) if cache and (folder / "model.safetensors").is_file() else None
    )
    if path is not None and path.is_file():
        return np.load(path)
    vectors = TextEncoder(folder).encode(texts, batch_size=batch_size, progress=progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(scratch, vectors)
        os.replace(scratch, path)  # atomic: a reader never sees half a file
    return vectors


def item_embeddings(
    catalog: Catalog,
    method: str = "tfidf",
    *,
    fit_items=None,
    encoder_path: str | os.PathLike | None = None,
    batch_size: int = 64,
    progress: bool = False,
    cache: bool = True,
):
    """Item text vectors, row i for catalog item i.

    "tfidf": sparse TF-IDF rows with the vocabulary fit on `fit_items` (required: the training
    items). "encoder": dense float32 mean-pooled sentence embeddings (`fit_items` unused),
    cached on disk unless `cache=False` (see `encoder_embeddings`).
    """
    if method == "tfidf":
        if fit_items is None:
            raise ValueError("tfidf item embeddings are fit on training items: pass fit_items")
        return text_features(catalog, fit_text_vectorizer(catalog, np.asarray(fit_items)))
    if method == "encoder":
        return encoder_embeddings(
            catalog, encoder_path, batch_size=batch_size, progress=progress, cache=cache
        )
    raise ValueError(f"item embedding method must be one of {METHODS}, got {method!r}")


def load_item_vectors(path, num_items: int) -> np.ndarray:
    """[num_items, d] float vectors from a .npy file, checked against the catalog."""
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(
            f"{path}: cannot read item embeddings ({e}); write a [num_items, dim] "
            "float .npy, e.g. with scripts/embed_items.py"
        ) from e
    if vectors.ndim != 2 or vectors.shape[0] != num_items:
        raise DataError(
            f"{path}: item embeddings have shape {vectors.shape}, expected "
            f"[{num_items}, dim] (one row per catalog item, in catalog order)"
        )
    if not np.issubdtype(vectors.dtype, np.floating) or not np.isfinite(vectors).all():
        raise DataError(f"{path}: item embeddings must be finite floats")
    return vectors
