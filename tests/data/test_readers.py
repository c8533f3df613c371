"""Readers on small fixtures written here, their errors, and the real datasets' counts."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from recsys_jax.data import readers
from recsys_jax.data.readers import ML100K_GENRES, read_dataset
from recsys_jax.data.schema import Catalog, DataError, UnknownItemError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

ITEMS_HEADER = "item_id\tasin\ttitle\tcategories_json\tidgenrec_text_id\ttitle_source\n"


def write_p5(folder: Path, lines=("1 1 2 3 4", "2 2 3 5", "3 5 1 4 2"), items=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sequential_data.txt").write_text("\n".join(lines) + "\n")
    if items is None:
        items = [
            ("1", "A1", "Lip Balm", json.dumps([["Beauty", "Skin Care", "Lips"]]), "", "meta"),
            ("2", "A2", "Lip Balm", json.dumps([["Beauty", "Skin Care"]]), "", "meta"),
            ("3", "A3", "", "[]", "trail running socks", ""),
            ("4", "A4", "Nail Polish, Red", json.dumps([["Beauty", "Makeup", "Nails"]]), "", ""),
        ]  # item 5 has no row: its id becomes its title
    with open(folder / "items.tsv", "w") as f:
        f.write(ITEMS_HEADER)
        for row in items:
            f.write("\t".join(row) + "\n")
    return folder


def test_p5_folder(tmp_path):
    ds = readers.read_p5_folder(write_p5(tmp_path / "tiny_p5"))
    assert ds.name == "tiny_p5"
    assert ds.summary_counts() == {"users": 3, "items": 5, "interactions": 11}
    assert not ds.has_ratings and not ds.has_reviews
    ids = ds.catalog.item_ids
    seqs = [[ids[i] for i in s] for s in ds.sequences()]
    assert seqs == [["1", "2", "3", "4"], ["2", "3", "5"], ["5", "1", "4", "2"]]
    cat = ds.catalog
    assert cat.titles[cat.index_of("4")] == "Nail Polish, Red"
    assert cat.attributes[cat.index_of("1")] == ["Beauty", "Skin Care", "Lips"]
    assert cat.titles[cat.index_of("3")] == "trail running socks"  # Sports-style fallback
    assert cat.titles[cat.index_of("5")] == "5"  # no catalog row
    assert ds.user_ids == ["1", "2", "3"]
    # ASINs from items.tsv, in catalog order; item 5 has no row and so no original id.
    assert cat.source_ids == ["A1", "A2", "A3", "A4", ""]


def test_p5_asins_fall_back_to_datamaps(tmp_path):
    folder = write_p5(tmp_path / "p5")
    (folder / "datamaps.json").write_text(
        json.dumps({"id2user": {"1": "U1"}, "id2item": {"1": "X1", "5": "B5"}})
    )
    cat = readers.read_p5_folder(folder).catalog
    assert cat.source_ids == ["A1", "A2", "A3", "A4", "B5"]  # items.tsv wins where it has one


def test_p5_without_asins_has_no_source_ids(tmp_path):
    folder = write_p5(tmp_path / "p5")
    (folder / "items.tsv").write_text("item_id\ttitle\n1\tLip Balm\n")
    assert readers.read_p5_folder(folder).catalog.source_ids is None


def test_subset_keeps_source_ids():
    cat = Catalog(["1", "2", "3"], ["a", "b", "c"], [[], [], []], ["A1", "", "A3"])
    sub = cat.subset(np.array([2, 1]))
    assert sub.item_ids == ["3", "2"] and sub.source_ids == ["A3", ""]
    assert Catalog(["1"], ["a"], [[]]).subset(np.array([0])).source_ids is None


def test_catalog_rejects_bad_source_ids():
    with pytest.raises(DataError, match="lengths"):
        Catalog(["1", "2"], ["a", "b"], [[], []], ["A1"])
    with pytest.raises(DataError, match="duplicate source ids"):
        Catalog(["1", "2"], ["a", "b"], [[], []], ["A1", "A1"])
    assert Catalog(["1", "2"], ["a", "b"], [[], []], ["", ""]).source_ids == ["", ""]


def test_duplicate_titles_are_kept(tmp_path):
    ds = readers.read_p5_folder(write_p5(tmp_path / "p5"))
    cat = ds.catalog
    a, b = cat.index_of("1"), cat.index_of("2")
    assert a != b and cat.titles[a] == cat.titles[b] == "Lip Balm"
    assert len(cat) == 5 and len(set(cat.item_ids)) == 5


def write_movielens_original(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text(
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t4\t881250950\n"
        "22\t242\t1\t878887116\n196\t1\t5\t881250000\n"
    )

    def flags(*names):
        return "|".join("1" if g in names else "0" for g in ML100K_GENRES)

    rows = [
        f"242|Kolya (1996)|24-Jan-1997||http://x|{flags('Comedy')}",
        f"302|L.A. Confidential (1997)|01-Jan-1997||http://x|{flags('Crime', 'Film-Noir')}",
        f"1|Café au lait (1993)|01-Jan-1993||http://x|{flags('Comedy', 'Drama')}",
    ]
    (folder / "u.item").write_bytes(("\n".join(rows) + "\n").encode("latin-1"))
    return folder


def test_movielens_original(tmp_path):
    ds = readers.read_movielens(write_movielens_original(tmp_path / "ml"))
    assert ds.summary_counts() == {"users": 3, "items": 3, "interactions": 5}
    assert ds.has_ratings and not ds.has_reviews
    cat = ds.catalog
    assert cat.titles[cat.index_of("1")] == "Café au lait (1993)"  # latin-1 decoded
    assert cat.attributes[cat.index_of("302")] == ["Crime", "Film-Noir"]
    assert cat.source_ids is None  # the movie ids already are the originals
    u = ds.user_ids.index("196")
    seq = ds.sequences()[u]
    assert [cat.item_ids[i] for i in seq] == ["1", "242", "302"]  # by timestamp
    rows = np.flatnonzero(ds.interactions.user == u)
    by_item = {cat.item_ids[ds.interactions.item[r]]: ds.interactions.rating[r] for r in rows}
    assert by_item == {"242": 3.0, "302": 4.0, "1": 5.0}


def write_movielens_atomic(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ml-tiny.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t4\t100\n1\t11\t2\t90\n2\t10\t5\t300\n"
    )
    (folder / "ml-tiny.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tToy Story\t1995\tAnimation Children's Comedy\n11\tHeat\t1995\tAction Crime\n"
    )
    return folder


def test_movielens_atomic(tmp_path):
    ds = readers.read_movielens(write_movielens_atomic(tmp_path / "ml_atomic"))
    assert ds.summary_counts() == {"users": 2, "items": 2, "interactions": 3}
    cat = ds.catalog
    assert cat.titles[cat.index_of("10")] == "Toy Story"
    assert cat.attributes[cat.index_of("10")] == ["Animation", "Children's", "Comedy"]
    assert [cat.item_ids[i] for i in ds.sequences()[0]] == ["11", "10"]
    assert sorted(ds.interactions.rating.tolist()) == [2.0, 4.0, 5.0]


def write_amazon_json(folder: Path, reviews=None, meta=None) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    if reviews is None:
        reviews = [
            {
                "reviewerID": "U1",
                "asin": "B1",
                "overall": 5.0,
                "reviewText": "Lovely, soft.",
                "summary": "Great",
                "unixReviewTime": 1300000000,
            },
            {
                "reviewerID": "U1",
                "asin": "B2",
                "overall": 2.0,
                "reviewText": "Too strong",
                "summary": "Meh",
                "unixReviewTime": 1200000000,
            },
            {"reviewerID": "U2", "asin": "B1", "overall": 4.0, "unixReviewTime": 1250000000},
        ]
    if meta is None:
        meta = [
            "{'asin': 'B1', 'title': 'Rose Soap', 'categories': [['Beauty', 'Bath'], "
            "['Beauty', 'Soap']]}",
            "{'asin': 'B2', 'title': \"Men's Cologne\", 'categories': [['Beauty']]}",
        ]
    r_path, m_path = folder / "reviews_Tiny_5.json.gz", folder / "meta_Tiny.json.gz"
    with gzip.open(r_path, "wt", encoding="utf-8") as f:
        for rec in reviews:
            f.write((rec if isinstance(rec, str) else json.dumps(rec)) + "\n")
    with gzip.open(m_path, "wt", encoding="utf-8") as f:
        f.write("\n".join(meta) + "\n")
    return r_path, m_path


def test_amazon_json(tmp_path):
    r, m = write_amazon_json(tmp_path)
    ds = readers.read_amazon_reviews(r, m)
    assert ds.name == "reviews_Tiny_5"
    assert ds.summary_counts() == {"users": 2, "items": 2, "interactions": 3}
    assert ds.has_ratings and ds.has_reviews
    cat = ds.catalog
    assert cat.titles[cat.index_of("B2")] == "Men's Cologne"
    assert cat.attributes[cat.index_of("B1")] == ["Beauty", "Bath", "Soap"]
    assert cat.source_ids is None  # dataset ids are the ASINs already
    inter = ds.interactions
    row = [
        k
        for k in range(3)
        if ds.user_ids[inter.user[k]] == "U1" and cat.item_ids[inter.item[k]] == "B1"
    ][0]
    assert (inter.rating[row], inter.review[row], inter.summary[row], inter.timestamp[row]) == (
        5.0,
        "Lovely, soft.",
        "Great",
        1300000000,
    )
    assert inter.review[2] == "" and inter.summary[2] == ""  # absent text -> empty
    assert [cat.item_ids[i] for i in ds.sequences()[0]] == ["B2", "B1"]  # chronological


@pytest.mark.parametrize("sep,ext", [(",", "csv"), ("\t", "tsv")])
def test_generic_csv_and_tsv(tmp_path, sep, ext):
    inter = tmp_path / f"mine.{ext}"
    items = tmp_path / f"items.{ext}"
    review = '"Nice, really"' if sep == "," else "Nice, really"
    inter.write_text(
        sep.join(["user", "item", "timestamp", "rating", "review"])
        + "\n"
        + sep.join(["u1", "i1", "10", "4", review])
        + "\n"
        + sep.join(["u1", "i2", "5", "3", "ok"])
        + "\n"
        + sep.join(["u2", "i2", "7", "5", ""])
        + "\n"
    )
    items.write_text(
        sep.join(["item", "title", "attributes"])
        + "\n"
        + sep.join(["i1", "Blue Mug", "Kitchen|Mugs"])
        + "\n"
        + sep.join(["i2", "Red Mug", ""])
        + "\n"
    )
    ds = readers.read_csv(inter, items)
    assert ds.name == "mine"
    assert ds.summary_counts() == {"users": 2, "items": 2, "interactions": 3}
    cat = ds.catalog
    assert cat.attributes[cat.index_of("i1")] == ["Kitchen", "Mugs"]
    assert cat.titles[cat.index_of("i2")] == "Red Mug"
    assert cat.source_ids is None
    assert ds.interactions.review[0] == "Nice, really"
    assert ds.interactions.rating.tolist() == [4.0, 3.0, 5.0]
    assert [cat.item_ids[i] for i in ds.sequences()[0]] == ["i2", "i1"]


def test_csv_without_rating_or_review(tmp_path):
    inter = tmp_path / "plain.csv"
    inter.write_text("user,item,timestamp\na,x,1\na,y,2\n")
    ds = readers.read_csv(inter)
    assert not ds.has_ratings and not ds.has_reviews
    assert ds.catalog.titles == ["x", "y"]


def test_read_dataset_dispatch(tmp_path):
    ds = read_dataset("p5", str(write_p5(tmp_path / "p5")))
    assert ds.num_users == 3
    with pytest.raises(DataError, match="unknown format"):
        read_dataset("parquet", str(tmp_path))
    with pytest.raises(DataError, match="needs --path"):
        read_dataset("p5")


# ---------------------------------------------------------------------------------------------
# Bad input


def _assert_names(err: pytest.ExceptionInfo, path: Path, line: int):
    msg = str(err.value)
    assert str(path) in msg and f":{line}:" in msg, msg


def test_malformed_p5_line_names_file_and_line(tmp_path):
    folder = write_p5(tmp_path / "p5", lines=("1 1 2 3", "2 2 x 3"))
    with pytest.raises(DataError) as err:
        readers.read_p5_folder(folder)
    _assert_names(err, folder / "sequential_data.txt", 2)


def test_malformed_items_tsv_line(tmp_path):
    folder = write_p5(
        tmp_path / "p5", items=[("1", "A1", "t", "[]", "", ""), ("2", "A2", "only three fields")]
    )
    with pytest.raises(DataError) as err:
        readers.read_p5_folder(folder)
    _assert_names(err, folder / "items.tsv", 3)


def test_malformed_movielens_lines(tmp_path):
    folder = write_movielens_original(tmp_path / "ml")
    with open(folder / "u.data", "a") as f:
        f.write("7\t8\tfive\t123\n")
    with pytest.raises(DataError) as err:
        readers.read_movielens(folder)
    _assert_names(err, folder / "u.data", 6)

    atomic = write_movielens_atomic(tmp_path / "atomic")
    with open(atomic / "ml-tiny.inter", "a") as f:
        f.write("3\t10\t4\n")
    with pytest.raises(DataError) as err:
        readers.read_movielens(atomic)
    _assert_names(err, atomic / "ml-tiny.inter", 5)


def test_malformed_amazon_json_line(tmp_path):
    r, m = write_amazon_json(
        tmp_path,
        reviews=[
            {"reviewerID": "U1", "asin": "B1", "overall": 5.0, "unixReviewTime": 1},
            "{not json at all",
        ],
    )
    with pytest.raises(DataError) as err:
        readers.read_amazon_reviews(r, m)
    _assert_names(err, r, 2)
    r, m = write_amazon_json(tmp_path / "b", reviews=[{"reviewerID": "U1", "asin": "B1"}])
    with pytest.raises(DataError) as err:  # required field missing
        readers.read_amazon_reviews(r, m)
    _assert_names(err, r, 1)


def test_malformed_csv_line(tmp_path):
    inter = tmp_path / "x.csv"
    inter.write_text("user,item,timestamp\na,b,1\na,c\n")
    with pytest.raises(DataError) as err:
        readers.read_csv(inter)
    _assert_names(err, inter, 3)
    inter.write_text("user,item,timestamp\na,b,yesterday\n")
    with pytest.raises(DataError) as err:
        readers.read_csv(inter)
    _assert_names(err, inter, 2)
    inter.write_text("user,product,timestamp\na,b,1\n")
    with pytest.raises(DataError, match="header lacks"):
        readers.read_csv(inter)


def test_excel_byte_order_mark_is_dropped(tmp_path):
    inter, items = tmp_path / "excel.csv", tmp_path / "items.csv"
    inter.write_bytes(b"\xef\xbb\xbfuser,item,timestamp\na,x,1\na,y,2\n")
    items.write_bytes("\ufeffitem,title\nx,Café mug\n".encode())
    ds = readers.read_csv(inter, items)
    assert ds.user_ids == ["a"] and ds.catalog.titles == ["Café mug", "y"]


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


@pytest.mark.parametrize(
    "content, line, detail",
    [
        ("user,item,timestamp\na,x,1\nb,café,2\n".encode("latin-1"), 3, "byte 0xe9 at byte"),
        (gzip.compress(b"user,item,timestamp\na,x,1\n"), 1, "gzip-compressed"),
        (PNG, 1, "byte 0x89 at byte offset 0); re-save it as UTF-8"),
    ],
    ids=["latin-1", "gzip", "binary"],
)
def test_text_that_is_not_utf8_names_the_line(tmp_path, content, line, detail):
    path = tmp_path / "interactions.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match="not UTF-8 text") as err:
        readers.read_csv(path)
    _assert_names(err, path, line)
    assert detail in str(err.value)
    good = tmp_path / "good.csv"
    good.write_text("user,item,timestamp\na,x,1\n")
    with pytest.raises(DataError, match="not UTF-8 text") as err:  # the items file too
        readers.read_csv(good, path)
    _assert_names(err, path, line)


@pytest.mark.parametrize(
    "sep, suffix, hint",
    [
        ("\t", "csv", "tab-separated: give it a .tsv suffix"),
        (",", "tsv", "comma-separated: give it a .csv suffix"),
        (";", "csv", "semicolon-separated: re-save it comma-separated"),
    ],
)
def test_header_split_by_another_delimiter_says_which(tmp_path, sep, suffix, hint):
    path = tmp_path / f"mine.{suffix}"
    path.write_text(sep.join(["user", "item", "timestamp"]) + "\n" + sep.join("ax1") + "\n")
    with pytest.raises(DataError, match="header lacks") as err:
        readers.read_csv(path)
    assert hint in str(err.value)


@pytest.mark.parametrize("value", ["inf", "nan", "1e400", "9223372036854775808", "-1e19"])
def test_timestamps_beyond_int64_name_the_line(tmp_path, value):
    path = tmp_path / "t.csv"
    path.write_text(f"user,item,timestamp\na,x,1\na,y,{value}\n")
    with pytest.raises(DataError, match="not a finite 64-bit number") as err:
        readers.read_csv(path)
    _assert_names(err, path, 3)


def test_large_timestamps_stay_exact(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("user,item,timestamp\na,x,1700000000123456789\na,y,1.5e3\n")
    assert readers.read_csv(path).interactions.timestamp.tolist() == [1700000000123456789, 1500]


@pytest.mark.parametrize("value, message", [("nan", "not a finite number"), ("", "empty rating")])
def test_nan_or_empty_rating_names_the_line(tmp_path, value, message):
    path = tmp_path / "r.csv"
    path.write_text(f"user,item,timestamp,rating\na,x,1,4\na,y,2,{value}\n")
    with pytest.raises(DataError, match=message) as err:
        readers.read_csv(path)
    _assert_names(err, path, 3)


def test_non_finite_numbers_in_other_formats_name_the_line(tmp_path):
    r, m = write_amazon_json(
        tmp_path / "a",
        reviews=[{"reviewerID": "U1", "asin": "B1", "overall": float("nan"), "unixReviewTime": 1}],
    )
    with pytest.raises(DataError, match="rating nan is not a finite number") as err:
        readers.read_amazon_reviews(r, m)
    _assert_names(err, r, 1)
    folder = write_movielens_original(tmp_path / "ml")
    with open(folder / "u.data", "a") as f:
        f.write("7\t8\t3\t1e400\n")
    with pytest.raises(DataError, match="not a finite 64-bit number") as err:
        readers.read_movielens(folder)
    _assert_names(err, folder / "u.data", 6)
    atomic = write_movielens_atomic(tmp_path / "atomic")
    with open(atomic / "ml-tiny.inter", "a") as f:
        f.write("3\t10\tNaN\t5\n")
    with pytest.raises(DataError, match="not a finite number") as err:
        readers.read_movielens(atomic)
    _assert_names(err, atomic / "ml-tiny.inter", 5)


def test_a_folder_where_a_file_belongs(tmp_path):
    inter = tmp_path / "i.csv"
    inter.write_text("user,item,timestamp\na,x,1\n")
    with pytest.raises(DataError, match="is a folder; give the file itself") as err:
        readers.read_csv(inter, tmp_path)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(DataError, match="is a file; --format p5 reads the dataset folder"):
        readers.read_p5_folder(inter)


def test_empty_and_missing_datasets(tmp_path):
    empty = tmp_path / "empty"
    write_p5(empty, lines=("",))
    with pytest.raises(DataError, match="no interactions"):
        readers.read_p5_folder(empty)
    with pytest.raises(DataError, match="not found"):
        readers.read_p5_folder(tmp_path / "nope")
    (tmp_path / "no_seq").mkdir()
    with pytest.raises(DataError, match="sequential_data"):
        readers.read_p5_folder(tmp_path / "no_seq")
    header_only = tmp_path / "h.csv"
    header_only.write_text("user,item,timestamp\n")
    with pytest.raises(DataError, match="no interactions"):
        readers.read_csv(header_only)
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    with pytest.raises(DataError, match="empty"):
        readers.read_csv(blank)
    with pytest.raises(DataError, match="not found"):
        readers.read_csv(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="not found"):
        readers.read_movielens(tmp_path / "missing_ml")
    with pytest.raises(DataError, match="not found"):
        readers.read_amazon_reviews(tmp_path / "reviews_None_5.json.gz")


def test_unknown_item_id(tmp_path):
    ds = readers.read_p5_folder(write_p5(tmp_path / "p5"))
    with pytest.raises(UnknownItemError) as err:
        ds.catalog.index_of("999")
    assert "999" in str(err.value)
    assert isinstance(err.value, KeyError)


# ---------------------------------------------------------------------------------------------
# Real data


def test_embedded_beauty_counts():
    ds = readers.read_embedded_beauty()
    assert ds.summary_counts() == {"users": 22363, "items": 12101, "interactions": 198502}
    assert all(t for t in ds.catalog.titles)
    assert all(ds.catalog.source_ids)  # every item has its ASIN


def _shared(name: str) -> Path:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    return folder


def test_shared_beauty_matches_embedded():
    ds = read_dataset("p5", str(_shared("amazon_beauty")))
    emb = readers.read_embedded_beauty()
    assert ds.summary_counts() == emb.summary_counts()
    assert ds.catalog.item_ids == emb.catalog.item_ids
    assert ds.catalog.source_ids == emb.catalog.source_ids
    assert all((a == b).all() for a, b in zip(ds.sequences()[:500], emb.sequences()[:500]))


def test_sports_counts():
    ds = read_dataset("p5", str(_shared("amazon_sports")))
    assert ds.summary_counts() == {"users": 35598, "items": 18357, "interactions": 296337}


def test_movielens_100k_atomic_counts():
    ds = read_dataset("movielens", str(_shared("movielens_100k")))
    assert ds.summary_counts() == {"users": 943, "items": 1682, "interactions": 100000}
    assert ds.has_ratings and set(np.unique(ds.interactions.rating).tolist()) == {1, 2, 3, 4, 5}
