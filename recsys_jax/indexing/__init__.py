"""Item indices (docs/design.md, item indices): how an item is written in prompts, and back.

    index = build_index("semantic_id", dataset.catalog, splits.train, seed=0)
    text = index.spell(item)            # "<a_5><b_17><c_3><d_0>"
    assert index.item_of(text) == item
    tokenizer_extra = index.added_tokens()
    same = load_index(index.state_dict())

Every index is fit on training sequences only and is injective over the whole catalog.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from recsys_jax.data.schema import Catalog
from recsys_jax.indexing.base import ItemIndex
from recsys_jax.indexing.item_token import ItemTokenIndex
from recsys_jax.indexing.random_id import RandomIdIndex
from recsys_jax.indexing.semantic_id import SemanticIdIndex
from recsys_jax.indexing.title import TitleIndex

INDEX_KINDS: dict[str, type[ItemIndex]] = {
    cls.kind: cls for cls in (TitleIndex, RandomIdIndex, ItemTokenIndex, SemanticIdIndex)
}


def _index_class(kind: str) -> type[ItemIndex]:
    try:
        return INDEX_KINDS[kind]
    except KeyError:
        raise ValueError(
            f"unknown item index kind {kind!r}; choose one of {sorted(INDEX_KINDS)}"
        ) from None


def build_index(
    kind: str,
    catalog: Catalog,
    train_sequences: Sequence[Sequence[int]],
    seed: int = 0,
    **options: Any,
) -> ItemIndex:
    """Fit an item index of `kind` on the catalog and the TRAINING sequences only.

    `train_sequences` are internal item indices per user, e.g. `leave_one_out(ds).train`; they
    must never contain validation or test items. `options` go to the kind (semantic_id:
    features, embedding, encoder_path, levels, codebook_size, dim, window, cooc_weight, method,
    kmeans_n_init).
    """
    check_index_options(kind, options)
    return _index_class(kind).fit(catalog, train_sequences, seed=seed, **options)


def check_index_options(kind: str, options: dict[str, Any]) -> None:
    """ValueError naming any option the index kind's `fit` does not take."""
    accepted = [
        name
        for name in inspect.signature(_index_class(kind).fit).parameters
        if name not in ("catalog", "train_sequences", "seed")
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"item index {kind!r} takes no option(s) {unknown} (it takes "
            f"{accepted or 'none'}); check data.index_options — a config made "
            "for another index kind may set them, override with "
            "'data.index_options={}'"
        )


def load_index(state_dict: dict[str, Any]) -> ItemIndex:
    """Rebuild an index from `ItemIndex.state_dict()`."""
    if not isinstance(state_dict, dict) or "kind" not in state_dict:
        raise ValueError("not an item index state_dict (no 'kind')")
    return _index_class(state_dict["kind"]).from_state_dict(state_dict)


__all__ = [
    "ItemIndex",
    "TitleIndex",
    "RandomIdIndex",
    "ItemTokenIndex",
    "SemanticIdIndex",
    "INDEX_KINDS",
    "build_index",
    "load_index",
]
