import collections

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_jax.data.schema import Catalog, UnknownItemError
from recsys_jax.indexing import build_index
from recsys_jax.indexing.title import UNTITLED, normalise_title, unique_titles


def catalog(titles):
    return Catalog([f"i{k}" for k in range(len(titles))], list(titles), [[] for _ in titles])


def test_whitespace_is_normalised_both_ways():
    index = build_index("title", catalog(["  Rose \t Oil\n50 ml ", "Soap"]), [[0, 1]])
    assert index.spell(0) == "Rose Oil 50 ml"
    assert index.item_of("Rose Oil 50 ml") == 0
    assert index.item_of(" Rose  Oil\n50 ml") == 0
    assert index.added_tokens() == []


def test_duplicates_get_suffixes_in_catalog_order():
    index = build_index("title", catalog(["Soap", "Oil", "Soap", " Soap ", "Oil"]), [])
    assert index.spell_all() == ["Soap", "Oil", "Soap (2)", "Soap (3)", "Oil (2)"]
    assert index.item_of("Soap (3)") == 3


def test_suffix_never_takes_a_real_title():
    # "Soap (2)" is a real title of a later item: it keeps it, the duplicate moves on to (3).
    assert unique_titles(["Soap", "Soap", "Soap (2)"]) == ["Soap", "Soap (3)", "Soap (2)"]
    assert unique_titles(["Soap (2)", "Soap", "Soap"]) == ["Soap (2)", "Soap", "Soap (3)"]


def test_empty_titles_fall_back_to_readable_unique_text():
    index = build_index("title", catalog(["", "  ", "Cream", UNTITLED]), [])
    assert index.spell_all() == [UNTITLED, f"{UNTITLED} (2)", "Cream", f"{UNTITLED} (3)"]
    assert "i0" not in index.spell(0)  # never the dataset's id


def test_unknown_title_suggests_case_fix():
    index = build_index("title", catalog(["Rose Oil"]), [])
    with pytest.raises(UnknownItemError, match="did you mean 'Rose Oil'"):
        index.item_of("rose oil")
    with pytest.raises(UnknownItemError, match="duplicate titles carry a suffix"):
        index.item_of("Rose Oil (2)")


title_text = st.text(alphabet=st.sampled_from(list("ab (2)3 \t")), max_size=8)


@settings(max_examples=200, deadline=None)
@given(st.lists(title_text, max_size=30))
def test_titles_are_unique_and_round_trip(titles):
    index = build_index("title", catalog(titles), [])
    spelled = index.spell_all()
    assert len(set(spelled)) == len(titles)
    assert all(index.item_of(t) == i for i, t in enumerate(spelled))
    assert all(t == normalise_title(t) and t for t in spelled)
    seen = set()
    for raw, t in zip(titles, spelled):  # the first occurrence keeps its plain title
        plain = normalise_title(raw) or UNTITLED
        if plain not in seen:
            assert t == plain
        seen.add(plain)


def test_beauty_duplicate_titles():
    from recsys_jax.data.readers import read_embedded_beauty

    dataset = read_embedded_beauty()
    index = build_index("title", dataset.catalog, [], max_words=0)  # full titles
    plain = [normalise_title(t) for t in dataset.catalog.titles]
    counts = collections.Counter(plain)
    duplicated = [t for t, c in counts.items() if c > 1]
    assert len(duplicated) == 27
    changed = [i for i, t in enumerate(index.spell_all()) if t != plain[i]]
    assert len(changed) == sum(counts[t] - 1 for t in duplicated)
    suffixes = sorted(index.spell(i)[len(plain[i]) :] for i in changed)
    assert suffixes == [" (2)"] * 27 + [" (3)"]  # 26 pairs and one triple


def test_long_titles_are_cut_before_deduplication():
    words = " ".join(f"w{k}" for k in range(30))
    index = build_index(
        "title", catalog([words + " red", words + " blue", "short"]), [], max_words=24
    )
    cut = " ".join(words.split()[:24])
    assert index.spell_all() == [cut, cut + " (2)", "short"]
    assert index.item_of(cut + " (2)") == 1
    assert build_index("title", catalog([words]), [], max_words=0).spell(0) == words
