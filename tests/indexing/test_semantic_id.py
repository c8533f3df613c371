import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from recsys_jax.data.schema import Catalog, DataError, UnknownItemError, build_dataset
from recsys_jax.data.splits import leave_one_out
from recsys_jax.indexing import build_index, load_index
from recsys_jax.indexing.semantic_id import (
    SemanticIdIndex,
    collision_codes,
    cooccurrence_counts,
    fit_text_vectorizer,
    ppmi,
)

FAMILIES = [
    "ruby nail lacquer",
    "green tea soap",
    "argan hair oil",
    "mint lip balm",
    "musk eau parfum",
    "clay face mask",
    "cocoa body butter",
    "bamboo makeup brush",
]
PER_FAMILY = 15
NUM_TRAIN_ITEMS = len(FAMILIES) * PER_FAMILY  # 120; items 120..123 are only ever held out
HELD_OUT_ONLY = [f"h{k}" for k in range(4)]
SMALL = {"levels": 2, "codebook_size": 8, "dim": 16}


def family_of(k):
    return k // PER_FAMILY


def make_dataset(held_out_title="zebracorn glitter", held_out_shift=0, users=160, seed=0):
    """Users buy within one family; some users' last two events are held-out-only items."""
    rng = np.random.default_rng(seed)
    rows = {
        f"p{k}": (f"{FAMILIES[family_of(k)]} shade {k}", ["Beauty", FAMILIES[family_of(k)]])
        for k in range(NUM_TRAIN_ITEMS)
    }
    rows.update(
        {h: (f"{held_out_title} {j}", ["Beauty", "Novelty"]) for j, h in enumerate(HELD_OUT_ONLY)}
    )
    events = []
    for u in range(users):
        fam = rng.integers(len(FAMILIES))
        items = [
            f"p{k}"
            for k in rng.choice(
                np.arange(fam * PER_FAMILY, (fam + 1) * PER_FAMILY), size=5, replace=False
            )
        ]
        if u < 8:  # the last two events (validation, test) are held-out-only items
            items[-2:] = [
                HELD_OUT_ONLY[(u + held_out_shift) % 4],
                HELD_OUT_ONLY[(u + held_out_shift + 1) % 4],
            ]
        events += [(f"u{u}", item, t) for t, item in enumerate(items)]
    return build_dataset("synthetic", events, rows)


@pytest.fixture(scope="module")
def data():
    dataset = make_dataset()
    return dataset, leave_one_out(dataset)


@pytest.fixture(scope="module")
def index(data):
    dataset, splits = data
    return build_index("semantic_id", dataset.catalog, splits.train, seed=0, **SMALL)


def held_out_only_items(dataset, splits):
    in_train = set(np.concatenate(splits.train).tolist())
    return [i for i in range(dataset.num_items) if i not in in_train]


def codes_by_id(index, dataset, items):
    """Item codes keyed by dataset id (internal numbering may differ between two datasets)."""
    return {dataset.catalog.item_ids[i]: tuple(index.codes[i]) for i in items}


def test_codes_spell_unique_fixed_length_token_strings(index, data):
    dataset, _ = data
    spelled = index.spell_all()
    assert len(set(spelled)) == dataset.num_items
    for i, text in enumerate(spelled):
        tokens = re.findall(r"<[^<>]+>", text)
        assert "".join(tokens) == text and " " not in text
        assert [t[1] for t in tokens] == ["a", "b", "c"]  # 2 levels + collision level
        assert index.item_of(text) == i
        assert index.item_of(" ".join(tokens)) == i  # tokens separated by spaces read too
    assert index.codes.shape == (dataset.num_items, 3)


def test_added_tokens_cover_every_level_and_the_collision_level(index):
    tokens = index.added_tokens()
    sizes = index.codebook_sizes
    assert len(tokens) == sum(sizes) == len(set(tokens))
    assert sizes[-1] == index.stats["max_last_code"] + 1
    assert tokens[0] == "<a_0>" and tokens[-1] == f"<c_{sizes[-1] - 1}>"
    used = {t for text in index.spell_all() for t in re.findall(r"<[^<>]+>", text)}
    assert used <= set(tokens)


def test_collision_stats_match_codes(index, data):
    last = index.codes[:, -1]
    assert index.stats["items_with_nonzero_last_code"] == np.count_nonzero(last)
    assert index.stats["max_last_code"] == last.max()
    assert index.stats["distinct_prefixes"] == len({tuple(c) for c in index.codes[:, :-1]})
    assert index.stats["fit_items"] == len(np.unique(np.concatenate(data[1].train)))


def test_first_level_groups_similar_items(data):
    dataset, splits = data
    index = build_index("semantic_id", dataset.catalog, splits.train, features="text", **SMALL)
    first = index.codes[:NUM_TRAIN_ITEMS, 0]
    family = np.array(
        [family_of(int(dataset.catalog.item_ids[i][1:])) for i in range(NUM_TRAIN_ITEMS)]
    )
    purity = sum(np.bincount(family[first == c]).max() for c in np.unique(first)) / len(first)
    assert purity >= 0.8


@pytest.mark.parametrize("features", ["text", "cooc", "text+cooc"])
@pytest.mark.parametrize("method", ["residual", "hierarchical"])
def test_every_feature_set_and_method_round_trips(data, features, method):
    dataset, splits = data
    index = build_index(
        "semantic_id",
        dataset.catalog,
        splits.train,
        seed=1,
        features=features,
        method=method,
        **SMALL,
    )
    spelled = index.spell_all()
    assert len(set(spelled)) == dataset.num_items
    assert [index.item_of(s) for s in spelled] == list(range(dataset.num_items))
    assert index.options["features"] == features and index.options["method"] == method


def test_deterministic_and_state_round_trip(index, data):
    dataset, splits = data
    again = build_index("semantic_id", dataset.catalog, splits.train, seed=0, **SMALL)
    assert np.array_equal(again.codes, index.codes)
    loaded = load_index(json.loads(json.dumps(index.state_dict())))
    assert isinstance(loaded, SemanticIdIndex)
    assert loaded.spell_all() == index.spell_all()
    assert loaded.stats == index.stats and loaded.options == index.options
    assert loaded.added_tokens() == index.added_tokens()


# ---------------------------------------------------------------------------------------------
# Fit on training data only (docs/design.md, leakage rules)


def test_held_out_text_does_not_shape_vocabulary_or_features(data):
    dataset, splits = data
    held_out = held_out_only_items(dataset, splits)
    assert {dataset.catalog.item_ids[i] for i in held_out} >= set(HELD_OUT_ONLY)
    # Only held-out text differs, in words the training vocabulary knows.
    other = make_dataset(held_out_title="green argan musk")
    other_splits = leave_one_out(other)
    assert [len(s) for s in other_splits.train] == [len(s) for s in splits.train]
    train_items = np.unique(np.concatenate(splits.train))

    vocabulary = fit_text_vectorizer(dataset.catalog, train_items).vocabulary_
    assert "zebracorn" not in vocabulary and "shade" in vocabulary

    def features(catalog, fit_items):
        return SemanticIdIndex._features(
            catalog, splits.train, fit_items, "text+cooc", 16, 5, 1.0, 0
        )

    a, b = features(dataset.catalog, train_items), features(other.catalog, train_items)
    assert np.array_equal(a[train_items], b[train_items])
    assert not np.allclose(a[held_out], b[held_out])  # held-out items are still encoded
    # The test has teeth: fitting on all items lets held-out text move training features.
    everything = np.arange(dataset.num_items)
    a_all, b_all = features(dataset.catalog, everything), features(other.catalog, everything)
    assert not np.allclose(a_all[train_items], b_all[train_items])
    assert "zebracorn" in fit_text_vectorizer(dataset.catalog, everything).vocabulary_

    index_a = build_index("semantic_id", dataset.catalog, splits.train, **SMALL)
    index_b = build_index("semantic_id", other.catalog, other_splits.train, **SMALL)
    assert np.array_equal(index_a.codes[train_items], index_b.codes[train_items])


def test_held_out_events_do_not_shape_cooccurrence(data):
    dataset, splits = data
    held_out = held_out_only_items(dataset, splits)
    # Same users and training parts, different validation/test items.
    other = make_dataset(held_out_shift=2)
    other_splits = leave_one_out(other)
    train_items = np.unique(np.concatenate(splits.train))
    other_train_items = np.unique(np.concatenate(other_splits.train))
    assert other.catalog.item_ids != dataset.catalog.item_ids  # numbering moved, too

    cooc = ppmi(cooccurrence_counts(splits.train, dataset.num_items, 5))
    assert cooc[held_out].nnz == 0 and cooc[:, held_out].nnz == 0
    index_a = build_index("semantic_id", dataset.catalog, splits.train, features="cooc", **SMALL)
    index_b = build_index(
        "semantic_id", other.catalog, other_splits.train, features="cooc", **SMALL
    )
    assert codes_by_id(index_a, dataset, train_items) == codes_by_id(
        index_b, other, other_train_items
    )
    # The test has teeth: counting whole sequences (validation and test included) differs.
    # The test has teeth: whole sequences (validation and test included) count differently.
    same_item = np.array([other.catalog.index_of(i) for i in dataset.catalog.item_ids])

    def counts(seqs_a, seqs_b):
        a = cooccurrence_counts(seqs_a, dataset.num_items, 5)
        b = cooccurrence_counts(seqs_b, other.num_items, 5)[same_item][:, same_item]
        return a, b

    a, b = counts(splits.train, other_splits.train)
    assert (a != b).nnz == 0
    a, b = counts(
        [splits.full_sequence(k) for k in range(len(splits.users))],
        [other_splits.full_sequence(k) for k in range(len(other_splits.users))],
    )
    assert (a != b).nnz > 0 and a[held_out].nnz > 0


def test_items_never_in_training_still_get_unique_codes(data):
    dataset, splits = data
    held_out = held_out_only_items(dataset, splits)
    index = build_index("semantic_id", dataset.catalog, splits.train, features="cooc", **SMALL)
    # Their cooc features are all zero, so they share one prefix and differ in the last code.
    assert len({tuple(c) for c in index.codes[held_out, :-1]}) == 1
    assert sorted(index.codes[held_out, -1]) == sorted(set(index.codes[held_out, -1]))
    assert all(index.item_of(index.spell(i)) == i for i in held_out)


# ---------------------------------------------------------------------------------------------
# Pieces and edge cases


def test_collision_codes_rank_by_priority_within_prefix():
    prefix = np.array([[0, 1], [0, 1], [2, 0], [0, 1], [2, 0], [1, 1]])
    priority = np.array([5, 1, 9, 3, 2, 0])
    assert collision_codes(prefix, priority).tolist() == [2, 0, 1, 1, 0, 0]


def test_frequent_training_items_take_the_low_collision_codes():
    # Identical text, no co-occurrence signal to split them: all four collide.
    catalog = Catalog(["a", "b", "c", "d"], ["same soap"] * 4, [["Soap"]] * 4)
    train = [[2, 2, 2], [1, 1], [3]]  # item 2 three times, item 1 twice, item 3 once, item 0 never
    index = build_index("semantic_id", catalog, train, features="text", levels=2)
    assert len({tuple(c) for c in index.codes[:, :-1]}) == 1
    assert index.codes[:, -1].tolist() == [3, 1, 0, 2]
    assert index.stats["items_with_nonzero_last_code"] == 3 and index.stats["max_last_code"] == 3


def test_tiny_catalog_with_large_codebook():
    catalog = Catalog(["a", "b", "c"], ["rose oil", "tea soap", "lip balm"], [[], [], []])
    index = build_index("semantic_id", catalog, [[0, 1], [1, 2]])  # defaults: 3 levels of 64
    assert len(set(index.spell_all())) == 3
    assert all(size <= 3 for size in index.stats["codebook_sizes"])


def test_unknown_codes_explain_the_format(index):
    code = index.codes[0].copy()
    taken = {tuple(c) for c in index.codes}
    code[-1] = index.codebook_sizes[-1] + 5
    assert tuple(code) not in taken
    unassigned = "".join(f"<{'abc'[k]}_{c}>" for k, c in enumerate(code))
    with pytest.raises(UnknownItemError, match="well formed but no item has it"):
        index.item_of(unassigned)
    with pytest.raises(UnknownItemError, match="3 tokens, one per level"):
        index.item_of("<a_0><b_0>")
    with pytest.raises(UnknownItemError, match="3 tokens"):
        index.item_of("<a_01><b_0><c_0>")


def test_bad_options_and_empty_training():
    catalog = Catalog(["a", "b"], ["rose oil", "tea soap"], [[], []])
    for bad in [
        {"features": "image"},
        {"method": "rqvae"},
        {"levels": 0},
        {"levels": 26},
        {"codebook_size": 0},
    ]:
        with pytest.raises(ValueError):
            build_index("semantic_id", catalog, [[0, 1]], **bad)
    with pytest.raises(DataError, match="hold no items"):
        build_index("semantic_id", catalog, [[], []])


# ---------------------------------------------------------------------------------------------
# Text embedded by a pretrained encoder (`embedding: encoder`, recsys_jax.encoders)

_spec = importlib.util.spec_from_file_location(
    "tiny_bert", Path(__file__).parents[1] / "encoders" / "tiny_bert.py"
)
tiny_bert = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_bert)


@pytest.fixture(scope="module")
def tiny_encoder_folder(tmp_path_factory):
    return str(tiny_bert.write_tiny_bert(tmp_path_factory.mktemp("tiny_bert")))


@pytest.fixture
def tiny_encoder(tiny_encoder_folder, monkeypatch, tmp_path):
    """A random-weight BERT folder: fast, and enough for uniqueness and leakage checks. Its
    embedding cache goes to a temporary folder."""
    monkeypatch.setenv("RECSYS_JAX_CACHE", str(tmp_path))
    return tiny_encoder_folder


@pytest.mark.parametrize("method", ["residual", "hierarchical"])
def test_encoder_embedding_gives_unique_deterministic_codes(data, tiny_encoder, method):
    dataset, splits = data
    options = dict(
        SMALL, features="text", embedding="encoder", encoder_path=tiny_encoder, method=method
    )
    index = build_index("semantic_id", dataset.catalog, splits.train, seed=0, **options)
    spelled = index.spell_all()
    assert len(set(spelled)) == dataset.num_items
    assert [index.item_of(s) for s in spelled] == list(range(dataset.num_items))
    assert index.options["embedding"] == "encoder"
    assert index.options["encoder_path"] == tiny_encoder
    assert index.stats["feature_dim"] == 32  # the encoder's width, no SVD
    again = build_index("semantic_id", dataset.catalog, splits.train, seed=0, **options)
    assert np.array_equal(again.codes, index.codes)
    assert load_index(json.loads(json.dumps(index.state_dict()))).spell_all() == spelled


def test_encoder_codes_are_fit_on_training_items_only(data, tiny_encoder):
    dataset, splits = data
    held_out = held_out_only_items(dataset, splits)
    other = make_dataset(held_out_title="green argan musk")  # only held-out text differs
    other_splits = leave_one_out(other)
    train_items = np.unique(np.concatenate(splits.train))

    def features(catalog):
        return SemanticIdIndex._features(
            catalog,
            splits.train,
            train_items,
            "text+cooc",
            16,
            5,
            1.0,
            0,
            embedding="encoder",
            encoder_path=tiny_encoder,
        )

    a, b = features(dataset.catalog), features(other.catalog)
    assert np.array_equal(a[train_items], b[train_items])
    assert not np.allclose(a[held_out], b[held_out])  # held-out items are still embedded
    options = dict(SMALL, embedding="encoder", encoder_path=tiny_encoder)
    index_a = build_index("semantic_id", dataset.catalog, splits.train, **options)
    index_b = build_index("semantic_id", other.catalog, other_splits.train, **options)
    assert np.array_equal(index_a.codes[train_items], index_b.codes[train_items])


def test_bundled_encoder_groups_similar_items(data):
    """With the real all-MiniLM-L6-v2 the first level groups items of one product family."""
    from recsys_jax.encoders.bundled import bundled_minilm_path

    try:
        bundled_minilm_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    dataset, splits = data
    index = build_index(
        "semantic_id", dataset.catalog, splits.train, features="text", embedding="encoder", **SMALL
    )
    assert index.options["encoder_path"] is None  # None = the bundled model
    first = index.codes[:NUM_TRAIN_ITEMS, 0]
    family = np.array(
        [family_of(int(dataset.catalog.item_ids[i][1:])) for i in range(NUM_TRAIN_ITEMS)]
    )
    purity = sum(np.bincount(family[first == c]).max() for c in np.unique(first)) / len(first)
    assert purity >= 0.8


def test_bad_embedding_options():
    catalog = Catalog(["a", "b"], ["rose oil", "tea soap"], [[], []])
    with pytest.raises(ValueError, match="embedding must be one of"):
        build_index("semantic_id", catalog, [[0, 1]], embedding="word2vec")
    with pytest.raises(ValueError, match="only read with embedding: encoder"):
        build_index("semantic_id", catalog, [[0, 1]], encoder_path="somewhere")


def test_embeddings_from_a_file_equal_the_encoder_they_came_from(data, tiny_encoder, tmp_path):
    from recsys_jax.encoders.item_embeddings import item_embeddings

    dataset, splits = data
    path = tmp_path / "items.npy"
    np.save(path, item_embeddings(dataset.catalog, "encoder", encoder_path=tiny_encoder))
    by_encoder = build_index(
        "semantic_id",
        dataset.catalog,
        splits.train,
        seed=0,
        **SMALL,
        embedding="encoder",
        encoder_path=tiny_encoder,
    )
    by_file = build_index(
        "semantic_id",
        dataset.catalog,
        splits.train,
        seed=0,
        **SMALL,
        embedding="file",
        embeddings_path=str(path),
    )
    assert np.array_equal(by_file.codes, by_encoder.codes)
    assert by_file.options["embeddings_path"] == str(path)

    np.save(path, np.zeros((dataset.num_items - 1, 8), np.float32))
    with pytest.raises(DataError, match=r"items\.npy.*one row per catalog item"):
        build_index(
            "semantic_id",
            dataset.catalog,
            splits.train,
            **SMALL,
            embedding="file",
            embeddings_path=str(path),
        )
    with pytest.raises(ValueError, match="needs embeddings_path"):
        build_index("semantic_id", dataset.catalog, splits.train, embedding="file")
