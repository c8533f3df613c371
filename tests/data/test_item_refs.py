"""Item references: original ids, dataset ids and exact titles resolve; errors help."""

import pytest

from recsys_jax.data import readers
from recsys_jax.data.item_refs import ItemResolver
from recsys_jax.data.schema import Catalog, DataError, UnknownItemError


def amazon_catalog() -> Catalog:
    """P5-style: the dataset ids are the source's own numbers, the ASINs are the originals."""
    return Catalog(
        ["1", "2", "3", "4"],
        ["Rose Soap", "Lip Balm", "Lip Balm", "Nail Polish, Red"],
        [["Beauty"], [], [], ["Nails"]],
        ["B004756YJA", "B004ZT0SSG", "B0020YLEYK", ""],
    )  # item 4 has no ASIN


def test_original_id_resolves():
    r = ItemResolver(amazon_catalog())
    assert r.resolve("B004ZT0SSG") == 1
    assert r.resolve_many(["B0020YLEYK", "B004756YJA"]) == [2, 0]


def test_dataset_id_and_title_resolve():
    r = ItemResolver(amazon_catalog())
    assert r.resolve("3") == 2 and r.resolve(3) == 2
    assert r.resolve("Rose Soap") == 0
    assert r.resolve("Nail Polish, Red") == 3


def test_original_id_wins_over_dataset_id_and_title():
    # Each ref is another item's dataset id / title: the original id comes first.
    cat = Catalog(["a", "b", "c"], ["x", "y", "b"], [[], [], []], ["c", "z", "w"])
    r = ItemResolver(cat)
    assert r.resolve("c") == 0  # original id of item 0, dataset id of item 2
    assert r.resolve("b") == 1  # dataset id of item 1 before the title of item 2


def test_display_id_prefers_the_original():
    r = ItemResolver(amazon_catalog())
    assert [r.display_id(i) for i in range(4)] == ["B004756YJA", "B004ZT0SSG", "B0020YLEYK", "4"]
    plain = ItemResolver(Catalog(["10", "20"], ["a", "b"], [[], []]))
    assert plain.display_id(1) == "20" and not plain.has_source_ids


def test_ambiguous_title_lists_display_ids():
    r = ItemResolver(amazon_catalog())
    with pytest.raises(UnknownItemError) as err:
        r.resolve("Lip Balm")
    message = str(err.value)
    assert "2 items" in message and "B004ZT0SSG" in message and "B0020YLEYK" in message


def test_unknown_asin_suggests_the_near_match():
    r = ItemResolver(amazon_catalog())
    with pytest.raises(UnknownItemError) as err:
        r.resolve("B004ZT0SSX")  # one character off
    message = str(err.value)
    assert "'B004ZT0SSX'" in message and "ASIN" in message and "exact title" in message
    assert "did you mean 'B004ZT0SSG'" in message
    assert isinstance(err.value, KeyError)


def test_unknown_title_suggests_titles_and_caps_suggestions():
    titles = [f"Lip Balm {k}" for k in range(8)]
    r = ItemResolver(Catalog([str(k) for k in range(8)], titles, [[]] * 8))
    with pytest.raises(UnknownItemError) as err:
        r.resolve("Lip Balm")
    message = str(err.value)
    assert "dataset item id" in message and "ASIN" not in message
    assert 1 <= message.count("'Lip Balm ") <= 3


def test_nothing_close_gives_no_suggestion():
    with pytest.raises(UnknownItemError) as err:
        ItemResolver(amazon_catalog()).resolve("zzzzzzzz")
    assert "did you mean" not in str(err.value)


def test_from_lists_matches_the_catalog_resolver():
    cat = amazon_catalog()
    r = ItemResolver.from_lists(cat.item_ids, cat.titles, cat.source_ids)
    assert r.resolve("B004756YJA") == 0 and r.display_id(3) == "4"
    plain = ItemResolver.from_lists(["x", "y"], ["t1", "t2"])
    assert plain.resolve("t2") == 1 and plain.display_id(0) == "x"
    with pytest.raises(DataError):
        ItemResolver.from_lists(["x", "y"], ["t1"])
    with pytest.raises(DataError, match="more than one item"):
        ItemResolver.from_lists(["x", "y"], ["t1", "t2"], ["A1", "A1"])


def test_embedded_beauty_asins_resolve():
    ds = readers.read_embedded_beauty()
    r = ItemResolver(ds.catalog)
    # The first two rows of the embedded items.tsv: P5 items "1" and "2".
    assert r.resolve("B004756YJA") == ds.catalog.index_of("1")
    assert r.resolve("B004ZT0SSG") == ds.catalog.index_of("2")
    assert r.display_id(ds.catalog.index_of("1")) == "B004756YJA"
