"""`semantic_id` index (TIGER; Hua et al., "How to Index Item IDs"): an item is a short code of
new tokens, one per level, e.g. `<a_5><b_17><c_3><d_0>`.

Building it, every learned piece is fit on TRAINING data only (docs/design.md, leakage rules):

1. Item features, option `features`:
   - "text": an embedding of title + attribute text, option `embedding`:
     "tfidf" (the default): TF-IDF whose vectorizer (vocabulary, idf) is fit on the text of
     items that occur in `train_sequences`; every catalog item is then transformed.
     "encoder": mean-pooled sentence embeddings from a pretrained BERT folder (option
     `encoder_path`; None = the bundled all-MiniLM-L6-v2, `recsys_jax.encoders`). Nothing is
     fit on our data, so an item's vector depends on its own text only.
     "file": precomputed item vectors from a `.npy` file (option `embeddings_path`), row i for
     catalog item i — from `scripts/embed_items.py` or any encoder of your own. Treated like
     "encoder" (dense, kept at full width).
   - "cooc": item-item co-occurrence within a window along the training sequences, turned into
     positive PMI (context-distribution smoothing 0.75). Items with no training co-occurrence
     get zeros.
   - "text+cooc" (the default): both.
2. TF-IDF and co-occurrence are reduced with TruncatedSVD (fit on the rows of training items)
   to `dim` dims; encoder embeddings keep their width (already dense). Each part is
   L2-normalised; for "text+cooc" the parts are concatenated (cooc scaled by `cooc_weight`) and
   L2-normalised again.
3. Clustering into `levels` codes of at most `codebook_size` each, k-means (sklearn, seeded)
   always fit on training items only; items outside training go to the nearest centroid:
   - method "residual" (TIGER-style residual quantisation, the default): cluster, subtract each
     item's centroid, cluster the residuals again; one shared codebook per level.
   - method "hierarchical" (Hua et al.'s CID, with k-means): every group of items sharing the
     codes so far is split again by its own k-means. Slower (one k-means per group) but uses
     the code space better, so far fewer collisions.
4. Items that share the whole prefix get a final collision code 0, 1, 2, ...: training items
   first by training frequency (most frequent gets 0), ties broken by a seeded random order.
   Every item's code is therefore unique, and every code has the same length `levels + 1`.

Token letters mark the level: level 0 uses `<a_*>`, level 1 `<b_*>`, ..., the collision level
the next letter. `spell` concatenates the tokens without spaces; `item_of` also accepts them
separated by whitespace.
"""

from __future__ import annotations

import re
import string
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import KMeans
from sklearn.decomposition import TruncatedSVD
from threadpoolctl import threadpool_limits

from recsys_jax.data.schema import Catalog, DataError
from recsys_jax.encoders.item_embeddings import (  # noqa: F401  (re-exported)
    fit_text_vectorizer,
    item_embeddings,
    item_text,
    load_item_vectors,
    text_features,
)
from recsys_jax.indexing.base import ItemIndex, check_train_sequences, seeded_rng

FEATURES = ("text", "cooc", "text+cooc")
EMBEDDINGS = ("tfidf", "encoder", "file")
METHODS = ("residual", "hierarchical")
LETTERS = string.ascii_lowercase
_TOKEN = re.compile(r"<([a-z])_(0|[1-9][0-9]*)>")


# ---------------------------------------------------------------------------------------------
# Features


def cooccurrence_counts(
    train_sequences: Sequence[np.ndarray], num_items: int, window: int
) -> sp.csr_matrix:
    """Symmetric [num_items, num_items] counts of item pairs at most `window` apart in a
    sequence."""
    lengths = np.array([len(s) for s in train_sequences], np.int64)
    if lengths.sum() == 0:
        return sp.csr_matrix((num_items, num_items), dtype=np.float64)
    flat = np.concatenate([np.asarray(s, np.int64) for s in train_sequences])
    owner = np.repeat(np.arange(len(lengths)), lengths)
    rows, cols = [], []
    for offset in range(1, window + 1):
        same = owner[:-offset] == owner[offset:]
        a, b = flat[:-offset][same], flat[offset:][same]
        keep = a != b
        rows += [a[keep], b[keep]]
        cols += [b[keep], a[keep]]
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    counts = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_items, num_items))
    return counts.tocsr()  # duplicates are summed


def ppmi(counts: sp.csr_matrix, alpha: float = 0.75) -> sp.csr_matrix:
    """Positive pointwise mutual information with smoothed context distribution (Levy et al.)."""
    counts = counts.tocoo()
    total = counts.sum()
    if total == 0:
        return sp.csr_matrix(counts.shape)
    row_p = np.asarray(counts.sum(axis=1)).ravel() / total
    col_mass = np.asarray(counts.sum(axis=0)).ravel() ** alpha
    col_p = col_mass / col_mass.sum()
    pmi = np.log(counts.data / total) - np.log(row_p[counts.row]) - np.log(col_p[counts.col])
    keep = pmi > 0
    return sp.csr_matrix((pmi[keep], (counts.row[keep], counts.col[keep])), shape=counts.shape)


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def reduce_dims(matrix, fit_rows: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """TruncatedSVD fit on `matrix[fit_rows]`, applied to every row, then L2-normalised rows."""
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    k = min(dim, matrix.shape[1] - 1, len(fit_rows) - 1)
    if k < 1:  # tiny inputs: keep the raw features
        return _l2_normalise(matrix.toarray())
    svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=7, random_state=seed)
    with np.errstate(divide="ignore", invalid="ignore"):  # constant input: variance ratio 0/0
        svd.fit(matrix[fit_rows])
    return _l2_normalise(svd.transform(matrix))


# ---------------------------------------------------------------------------------------------
# Codes


def residual_kmeans(
    x: np.ndarray, fit_rows: np.ndarray, levels: int, codebook_size: int, seed: int, n_init: int = 1
) -> tuple[np.ndarray, list[int]]:
    """[num_items, levels] codes; k-means at each level is fit on `fit_rows` only.

    Returns the codes and the number of centroids actually used per level (fewer than
    `codebook_size` when there are fewer distinct training vectors).
    """
    residual = np.asarray(x, np.float64).copy()
    codes = np.zeros((len(x), levels), np.int64)
    sizes = []
    for level in range(levels):
        distinct = len(np.unique(np.round(residual[fit_rows], 9), axis=0))
        k = max(1, min(codebook_size, distinct))
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed + level)
        km.fit(residual[fit_rows])
        labels = km.predict(residual)
        codes[:, level] = labels
        residual -= km.cluster_centers_[labels]
        sizes.append(k)
    return codes, sizes


def hierarchical_kmeans(
    x: np.ndarray, fit_rows: np.ndarray, levels: int, codebook_size: int, seed: int, n_init: int = 1
) -> tuple[np.ndarray, list[int]]:
    """[num_items, levels] codes from recursive k-means: each cluster is split again.

    At every level each group of items that share the codes so far is clustered into at most
    `codebook_size` parts by k-means fit on the group's training items; the group's other items
    go to the nearest centroid. A group with fewer than two distinct training vectors is not
    split (code 0). Returns the codes and the largest code + 1 used per level.
    """
    x = np.asarray(x, np.float64)
    is_fit = np.zeros(len(x), bool)
    is_fit[fit_rows] = True
    codes = np.zeros((len(x), levels), np.int64)
    groups = [np.arange(len(x))]
    for level in range(levels):
        next_groups = []
        for group in groups:
            fit = group[is_fit[group]]
            distinct = len(np.unique(np.round(x[fit], 9), axis=0)) if len(fit) else 0
            k = min(codebook_size, distinct)
            if k < 2:
                next_groups.append(group)  # codes stay 0
                continue
            km = KMeans(n_clusters=k, n_init=n_init, random_state=seed + level).fit(x[fit])
            labels = km.predict(x[group])
            codes[group, level] = labels
            next_groups += [group[labels == c] for c in range(k) if np.any(labels == c)]
        groups = next_groups
    sizes = [int(codes[:, level].max()) + 1 for level in range(levels)] if len(x) else [1] * levels
    return codes, sizes


def collision_codes(prefix: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """A final code per item so that (prefix, code) is unique: rank within its prefix group.

    Items with a lower `priority` value take the lower codes; `priority` must be distinct.
    """
    order = np.lexsort((priority, *prefix.T[::-1]))
    sorted_prefix = prefix[order]
    new_group = np.ones(len(order), bool)
    new_group[1:] = np.any(sorted_prefix[1:] != sorted_prefix[:-1], axis=1)
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(order)), 0))
    last = np.empty(len(order), np.int64)
    last[order] = np.arange(len(order)) - group_start
    return last


def collision_stats(codes: np.ndarray) -> dict[str, int]:
    last = codes[:, -1]
    return {
        "items": int(len(codes)),
        "distinct_prefixes": int(len(np.unique(codes[:, :-1], axis=0))) if len(codes) else 0,
        "items_with_nonzero_last_code": int(np.count_nonzero(last)),
        "max_last_code": int(last.max()) if len(last) else 0,
    }


# ---------------------------------------------------------------------------------------------
# The index


class SemanticIdIndex(ItemIndex):
    kind = "semantic_id"

    def __init__(
        self,
        codes,
        codebook_sizes: Sequence[int],
        options: dict | None = None,
        stats: dict | None = None,
    ):
        """`codes[i]` = item i's code tuple (levels + 1 ints, the last breaks collisions)."""
        self._codes = np.asarray(codes, np.int64)
        if self._codes.ndim != 2 or self._codes.shape[1] < 2:
            raise ValueError("semantic_id codes must be [num_items, levels + 1] with levels >= 1")
        self._codebook_sizes = [int(k) for k in codebook_sizes]
        if len(self._codebook_sizes) != self.levels + 1:
            raise ValueError(
                "semantic_id needs one codebook size per level plus the collision level"
            )
        if self.levels + 1 > len(LETTERS):
            raise ValueError(f"semantic_id supports at most {len(LETTERS) - 1} levels")
        if len(self._codes) and (
            self._codes.min() < 0 or np.any(self._codes.max(axis=0) >= self._codebook_sizes)
        ):
            raise ValueError("semantic_id codes fall outside their codebooks")
        self.options = dict(options or {})
        self.stats = dict(stats or collision_stats(self._codes))
        self.fit_seconds: float | None = None  # timings of a fresh fit; not saved in the state
        self.feature_seconds: float | None = None
        self._spelled = [self._spell_code(c) for c in self._codes]
        self._item_of = {s: i for i, s in enumerate(self._spelled)}
        if len(self._item_of) != len(self._spelled):
            raise ValueError("semantic_id codes are not unique")

    @classmethod
    def fit(
        cls,
        catalog: Catalog,
        train_sequences,
        seed: int = 0,
        *,
        features: str = "text+cooc",
        levels: int = 3,
        codebook_size: int = 64,
        dim: int = 64,
        window: int = 5,
        cooc_weight: float = 1.0,
        method: str = "residual",
        kmeans_n_init: int = 1,
        embedding: str = "tfidf",
        encoder_path: str | None = None,
        embeddings_path: str | None = None,
    ) -> SemanticIdIndex:
        start = time.perf_counter()
        if features not in FEATURES:
            raise ValueError(f"semantic_id features must be one of {FEATURES}, got {features!r}")
        if embedding not in EMBEDDINGS:
            raise ValueError(
                f"semantic_id embedding must be one of {EMBEDDINGS}, got {embedding!r}"
            )
        if encoder_path is not None and embedding != "encoder":
            raise ValueError("semantic_id encoder_path is only read with embedding: encoder")
        if (embeddings_path is None) != (embedding != "file"):
            raise ValueError(
                "semantic_id embedding: file needs embeddings_path (a .npy with one "
                "row per catalog item), and embeddings_path needs embedding: file"
            )
        if method not in METHODS:
            raise ValueError(f"semantic_id method must be one of {METHODS}, got {method!r}")
        if not 1 <= levels <= len(LETTERS) - 1:
            raise ValueError(f"semantic_id levels must be in 1..{len(LETTERS) - 1}, got {levels}")
        if codebook_size < 1 or dim < 1 or window < 1:
            raise ValueError("semantic_id codebook_size, dim and window must be positive")
        n = len(catalog)
        seqs = check_train_sequences(train_sequences, n)
        train_count = np.bincount(np.concatenate([*seqs, np.zeros(0, np.int64)]), minlength=n)
        train_items = np.flatnonzero(train_count)
        if len(train_items) == 0:
            raise DataError("semantic_id is fit on training sequences, but they hold no items")

        # One BLAS/OpenMP thread: the codes do not depend on the machine's core count (summation
        # order), and on a shared CPU this is faster than oversubscribed threads.
        with threadpool_limits(limits=1):
            x = cls._features(
                catalog,
                seqs,
                train_items,
                features,
                dim,
                window,
                cooc_weight,
                seed,
                embedding=embedding,
                encoder_path=encoder_path,
                embeddings_path=embeddings_path,
            )
            feature_seconds = time.perf_counter() - start
            cluster = residual_kmeans if method == "residual" else hierarchical_kmeans
            prefix, sizes = cluster(x, train_items, levels, codebook_size, seed, kmeans_n_init)

        tie_break = seeded_rng(seed, cls.kind).permutation(n)
        priority = -train_count * (n + 1) + tie_break  # frequent first, then seeded random order
        last = collision_codes(prefix, priority)
        codes = np.concatenate([prefix, last[:, None]], axis=1)
        options = {
            "seed": seed,
            "features": features,
            "levels": levels,
            "codebook_size": codebook_size,
            "dim": dim,
            "window": window,
            "cooc_weight": cooc_weight,
            "method": method,
            "kmeans_n_init": kmeans_n_init,
            "embedding": embedding,
        }
        if embedding == "encoder":
            options["encoder_path"] = None if encoder_path is None else str(encoder_path)
        if embedding == "file":
            options["embeddings_path"] = str(embeddings_path)
        stats = {
            **collision_stats(codes),
            "fit_items": int(len(train_items)),
            "feature_dim": int(x.shape[1]),
            "codebook_sizes": sizes,
        }
        index = cls(codes, [*sizes, int(last.max()) + 1], options, stats)
        index.fit_seconds = time.perf_counter() - start
        index.feature_seconds = feature_seconds
        return index

    @staticmethod
    def _features(
        catalog,
        seqs,
        train_items,
        features,
        dim,
        window,
        cooc_weight,
        seed,
        *,
        embedding="tfidf",
        encoder_path=None,
        embeddings_path=None,
    ):
        """[num_items, d] L2-normalised item features (see the module docstring)."""
        parts = []
        if "text" in features and embedding == "tfidf":
            tfidf = item_embeddings(catalog, "tfidf", fit_items=train_items)
            parts.append(reduce_dims(tfidf, train_items, dim, seed))
        elif "text" in features and embedding == "file":
            vectors = load_item_vectors(embeddings_path, len(catalog))
            parts.append(_l2_normalise(vectors.astype(np.float64)))
        elif "text" in features:
            vectors = item_embeddings(catalog, "encoder", encoder_path=encoder_path, progress=True)
            parts.append(_l2_normalise(vectors.astype(np.float64)))
        if "cooc" in features:
            cooc = ppmi(cooccurrence_counts(seqs, len(catalog), window))
            parts.append(cooc_weight * reduce_dims(cooc, train_items, dim, seed))
        return _l2_normalise(np.concatenate(parts, axis=1))

    # -- spelling --------------------------------------------------------------------------

    @property
    def levels(self) -> int:
        """Clustering levels (the collision code comes on top)."""
        return self._codes.shape[1] - 1

    @property
    def num_items(self) -> int:
        return len(self._codes)

    @property
    def codes(self) -> np.ndarray:
        """[num_items, levels + 1] code tuples (a copy)."""
        return self._codes.copy()

    @property
    def codebook_sizes(self) -> list[int]:
        """Codes per position, the collision level last (its size = max collision code + 1)."""
        return list(self._codebook_sizes)

    @staticmethod
    def _spell_code(code: Sequence[int]) -> str:
        return "".join(f"<{LETTERS[level]}_{int(c)}>" for level, c in enumerate(code))

    def spell(self, item: int) -> str:
        return self._spelled[self._check_item(item)]

    def item_of(self, text: str) -> int:
        key = "".join(str(text).split())
        try:
            return self._item_of[key]
        except KeyError:
            pass
        example = self._spelled[0] if self._spelled else ""
        tokens = _TOKEN.findall(key)
        well_formed = "".join(f"<{a}_{c}>" for a, c in tokens) == key and [
            a for a, _ in tokens
        ] == list(LETTERS[: self.levels + 1])
        if well_formed:
            hint = "this code is well formed but no item has it"
        else:
            hint = f"a semantic id is {self.levels + 1} tokens, one per level, like {example!r}"
        raise self._unknown(text, hint)

    def added_tokens(self) -> list[str]:
        return [
            f"<{LETTERS[level]}_{c}>"
            for level, size in enumerate(self._codebook_sizes)
            for c in range(size)
        ]

    # -- state -----------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "codes": self._codes.tolist(),
            "codebook_sizes": list(self._codebook_sizes),
            "options": dict(self.options),
            "stats": dict(self.stats),
        }

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> SemanticIdIndex:
        return cls(
            state["codes"], state["codebook_sizes"], state.get("options"), state.get("stats")
        )
