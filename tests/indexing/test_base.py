"""The contract every item index keeps: round trip, injective, tokens, state, fit on train only."""

import json
import re

import numpy as np
import pytest

from recsys_jax.data.schema import Catalog, DataError, UnknownItemError
from recsys_jax.indexing import INDEX_KINDS, ItemIndex, build_index, load_index

KINDS = sorted(INDEX_KINDS)
SMALL_SEMANTIC = {"codebook_size": 4, "levels": 2, "dim": 8}
TOKEN = re.compile(r"<[^<>\s]+>")


def options(kind):
    return SMALL_SEMANTIC if kind == "semantic_id" else {}


def small_catalog(n=40):
    families = ["red nail polish", "green tea soap", "argan hair oil", "mint lip balm"]
    titles = [f"{families[i % 4]} number {i}" for i in range(n)]
    titles[5] = titles[1]  # a duplicate title
    attributes = [["Beauty", families[i % 4].split()[-1]] for i in range(n)]
    return Catalog([f"id{i}" for i in range(n)], titles, attributes)


def small_train(n=40, users=30, seed=0):
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(users):
        family = rng.integers(4)
        pool = np.arange(family, n - 4, 4)  # the last 4 items never occur in training
        seqs.append(rng.choice(pool, size=rng.integers(2, 6), replace=False))
    return seqs


@pytest.fixture(scope="module", params=KINDS)
def index(request):
    return build_index(
        request.param, small_catalog(), small_train(), seed=0, **options(request.param)
    )


def test_round_trip_and_injective(index):
    spelled = index.spell_all()
    assert index.num_items == 40
    assert len(set(spelled)) == 40
    assert [index.item_of(text) for text in spelled] == list(range(40))


def test_added_tokens_are_atomic_and_cover_spelling(index):
    tokens = index.added_tokens()
    assert len(set(tokens)) == len(tokens)
    assert all(TOKEN.fullmatch(t) for t in tokens)
    used = {t for text in index.spell_all() for t in TOKEN.findall(text)}
    assert used <= set(tokens)


def test_state_dict_is_json_and_reloads_identically(index):
    state = json.loads(json.dumps(index.state_dict()))
    again = load_index(state)
    assert type(again) is type(index) and again.kind == index.kind
    assert again.spell_all() == index.spell_all()
    assert again.added_tokens() == index.added_tokens()
    assert type(index).from_state_dict(state).spell_all() == index.spell_all()


def test_deterministic_for_a_seed(index):
    again = build_index(index.kind, small_catalog(), small_train(), seed=0, **options(index.kind))
    assert again.spell_all() == index.spell_all()


def test_unknown_text_and_item(index):
    for text in ["", "no such item", "<zz_1>", "999999"]:
        with pytest.raises(UnknownItemError, match=index.kind):
            index.item_of(text)
    with pytest.raises(UnknownItemError, match="out of range"):
        index.spell(40)
    with pytest.raises(UnknownItemError):
        index.spell(-1)
    with pytest.raises(TypeError):
        index.spell("3")


def test_unknown_item_error_is_a_key_error_with_readable_message(index):
    with pytest.raises(KeyError) as info:
        index.item_of("nothing")
    assert str(info.value).startswith("'nothing' does not spell any item")


@pytest.mark.parametrize("kind", KINDS)
def test_training_items_out_of_range_are_rejected(kind):
    with pytest.raises(DataError, match="outside the catalog"):
        build_index(kind, small_catalog(), [[0, 1], [2, 40]], **options(kind))


def test_factory_errors():
    with pytest.raises(ValueError, match="unknown item index kind"):
        build_index("p5_sequential_ids", small_catalog(), small_train())
    with pytest.raises(ValueError, match=r"'random_id' takes no option\(s\) \['codebook_size'\]"):
        build_index("random_id", small_catalog(), small_train(), codebook_size=3)
    with pytest.raises(ValueError, match="unknown item index kind"):
        load_index({"kind": "nope"})
    with pytest.raises(ValueError, match="no 'kind'"):
        load_index({"titles": []})


def test_from_state_dict_checks_kind_and_version():
    state = build_index("random_id", small_catalog(), small_train()).state_dict()
    with pytest.raises(ValueError, match="kind"):
        INDEX_KINDS["item_token"].from_state_dict(state)
    with pytest.raises(ValueError, match="format_version"):
        load_index({**state, "format_version": 99})
    with pytest.raises(ValueError, match="inconsistent"):
        load_index({**state, "num_items": 3})


def test_is_an_item_index():
    for kind, cls in INDEX_KINDS.items():
        assert issubclass(cls, ItemIndex) and cls.kind == kind


# ---------------------------------------------------------------------------------------------
# The real data: every index round-trips all 12,101 Beauty items.


@pytest.fixture(scope="module")
def beauty():
    from recsys_jax.data.readers import read_embedded_beauty
    from recsys_jax.data.splits import leave_one_out

    dataset = read_embedded_beauty()
    return dataset, leave_one_out(dataset)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_beauty_round_trip_all_items(beauty, kind):
    dataset, splits = beauty
    index = build_index(kind, dataset.catalog, splits.train, seed=0)
    spelled = index.spell_all()
    assert index.num_items == dataset.num_items == 12101
    assert len(set(spelled)) == 12101
    assert all(index.item_of(text) == i for i, text in enumerate(spelled))
    assert load_index(json.loads(json.dumps(index.state_dict()))).spell_all() == spelled


def test_options_of_another_index_kind_are_named_in_the_error():
    """A semantic_id config switched to data.index=title must fail clearly, not with TypeError."""
    catalog = Catalog(["a", "b"], ["rose oil", "tea soap"], [[], []])
    with pytest.raises(ValueError, match=r"'title' takes no option\(s\) \['method'\].*max_words"):
        build_index("title", catalog, [[0, 1]], method="hierarchical")
    with pytest.raises(ValueError, match=r"'item_token' takes no option\(s\) \['codebook_size'\]"):
        build_index("item_token", catalog, [[0, 1]], codebook_size=32)
