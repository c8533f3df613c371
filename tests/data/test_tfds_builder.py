"""Prepared splits: written as array_record by the tfds builder, read back without TensorFlow."""

import json
import sys
import warnings

import grain
import numpy as np
import pytest

from recsys_jax.data import tfds_builder as tb
from recsys_jax.data.prepared import load_prepared
from recsys_jax.data.schema import DataError, build_dataset


def tiny_dataset(ratings=True, name="tiny", originals=False):
    """6 users over 12 items; user u5 has 2 items (left out of the sequence splits). With
    `originals`, items carry original ids (ASIN-like), except item11."""
    rng = np.random.default_rng(7)
    events = []
    for u in range(6):
        n = 2 if u == 5 else 4 + u % 3
        for t, item in enumerate(rng.choice(12, size=n, replace=False)):
            ev = (f"user{u}", f"item{item}", 1000 + 10 * t)
            if ratings:
                ev += (float(1 + (u + t) % 5), f"review {u}-{t} ünï", f"sum {u}")
            events.append(ev)
    catalog = {f"item{i}": (f"Title {i % 5}", [f"cat{i % 2}", "all"]) for i in range(12)}
    source_ids = {f"item{i}": f"B{i:09d}" for i in range(11)} if originals else None
    return build_dataset(
        name, events, catalog, with_rating=ratings, with_review=ratings, source_ids=source_ids
    )


def make(ds, n_neg=4, seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tb.make_splits(ds, seed=seed, num_negatives=n_neg)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    ds = tiny_dataset()
    prepared = make(ds)
    root = tmp_path_factory.mktemp("prep")
    path = tb.write_prepared(prepared, root, source={"format": "test"}, options={"seed": 0})
    return ds, prepared, root, path


def test_layout(written):
    ds, prepared, root, path = written
    assert path == root / "tiny"
    names = {p.name for p in path.iterdir()}
    assert {"meta.json", "catalog.json", "users.json", "recsys_prepared"} <= names
    for config, split_names in tb.CONFIG_SPLITS.items():
        version_dir = path / "recsys_prepared" / config / tb.TFDS_VERSION
        assert (version_dir / "dataset_info.json").is_file()
        for split in split_names:
            assert list(version_dir.glob(f"recsys_prepared-{split}.array_record-*"))
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temp folder left
    meta = json.loads((path / "meta.json").read_text())
    assert meta["format_version"] == tb.FORMAT_VERSION
    assert meta["counts"] == {
        "users": 6,
        "items": ds.num_items,
        "interactions": 26,
        "sequence_users": 5,
        "users_left_out_of_sequences": 1,
    }
    assert meta["splits"]["train"] == 5 and meta["num_negatives"] == 4
    assert meta["seeds"] == {"test_negatives": 0, "rating_split": 0}
    assert meta["source"] == {"format": "test"} and meta["options"] == {"seed": 0}


def test_round_trip_sequences(written):
    ds, prepared, root, path = written
    data = load_prepared(root, "tiny")
    seq = prepared.sequences
    assert data.catalog.item_ids == ds.catalog.item_ids
    assert data.catalog.titles == ds.catalog.titles  # duplicate titles kept
    assert data.catalog.attributes == ds.catalog.attributes
    assert data.catalog.source_ids is None
    assert "source_ids" not in json.loads((path / "catalog.json").read_text())  # as before
    assert data.user_ids == ds.user_ids
    np.testing.assert_array_equal(data.train_users(), seq.users)
    assert [s.tolist() for s in data.train_sequences()] == [s.tolist() for s in seq.train]
    val = data.validation_cases()
    np.testing.assert_array_equal(val.targets, seq.valid_target)
    assert [h.tolist() for h in val.histories] == [s.tolist() for s in seq.train]
    assert val.negatives is None
    test = data.test_cases()
    np.testing.assert_array_equal(test.users, seq.users)
    np.testing.assert_array_equal(test.targets, seq.test_target)
    np.testing.assert_array_equal(test.negatives, prepared.test_negatives)
    for k in range(len(test)):
        assert test.histories[k].tolist() == seq.train[k].tolist() + [seq.valid_target[k]]
    assert "tensorflow" not in sys.modules


def test_round_trip_ratings(written):
    ds, prepared, root, path = written
    data = load_prepared(root, "tiny")
    assert data.has_ratings and data.has_reviews
    inter = ds.interactions
    for split, rows in (
        ("rating_train", prepared.ratings.train),
        ("rating_validation", prepared.ratings.valid),
        ("rating_test", prepared.ratings.test),
    ):
        got = data.rating_rows(split)
        np.testing.assert_array_equal(got["user"], inter.user[rows])
        np.testing.assert_array_equal(got["item"], inter.item[rows])
        np.testing.assert_array_equal(got["rating"], inter.rating[rows])
        np.testing.assert_array_equal(got["timestamp"], inter.timestamp[rows])
        assert got["review"] == [inter.review[r] for r in rows]
        assert got["summary"] == [inter.summary[r] for r in rows]
        assert data.split_size(split) == len(rows) == len(data.source(split))
    raw = data.source("rating_train")[0]
    assert isinstance(raw["review"], bytes)  # text comes back as UTF-8 bytes from the source
    assert int(raw["timestamp"]) == inter.timestamp[prepared.ratings.train[0]]


def test_tfds_data_source_and_grain_read_it(written):
    import tensorflow_datasets as tfds

    ds, prepared, root, path = written
    src = tfds.data_source("recsys_prepared/test_cases", data_dir=str(path))["test"]
    assert len(src) == 5
    np.testing.assert_array_equal(src[2]["negatives"], prepared.test_negatives[2])
    data = load_prepared(root, "tiny")
    users = [int(r["user"]) for r in grain.MapDataset.source(data.source("train"))]
    assert users == prepared.sequences.users.tolist()


def test_negatives_are_fixed_and_unseen(written):
    ds, prepared, root, path = written
    test = load_prepared(root, "tiny").test_cases()
    seqs = ds.sequences()
    for u, neg in zip(test.users, test.negatives):
        assert len(set(neg.tolist())) == 4 and set(neg.tolist()).isdisjoint(seqs[u].tolist())
    np.testing.assert_array_equal(make(ds).test_negatives, prepared.test_negatives)


def test_writing_is_deterministic(tmp_path):
    a = tb.write_prepared(make(tiny_dataset()), tmp_path / "a")
    b = tb.write_prepared(make(tiny_dataset()), tmp_path / "b")
    for name in ("meta.json", "catalog.json", "users.json"):  # meta holds per-split sha256
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert set(json.loads((a / "meta.json").read_text())["fingerprints"]) == set(tb.SPLIT_CONFIG)
    da, db = load_prepared(tmp_path / "a", "tiny"), load_prepared(tmp_path / "b", "tiny")
    for split in da.splits:  # same decoded records in the same order
        ra, rb = da.records(split), db.records(split)
        assert len(ra) == len(rb) > 0
        for x, y in zip(ra, rb):
            assert x.keys() == y.keys()
            for k in x:
                np.testing.assert_array_equal(x[k], y[k])


def test_without_ratings_there_are_no_rating_splits(tmp_path):
    path = tb.write_prepared(make(tiny_dataset(ratings=False, name="seq_only")), tmp_path)
    assert not (path / "recsys_prepared" / "ratings").exists()
    data = load_prepared(tmp_path, "seq_only")
    assert data.splits == ("train", "validation", "test") and not data.has_ratings
    with pytest.raises(DataError, match="no ratings"):
        data.source("rating_train")


def test_source_ids_round_trip(tmp_path):
    ds = tiny_dataset(ratings=False, name="orig", originals=True)
    assert ds.catalog.source_ids[ds.catalog.index_of("item3")] == "B000000003"
    assert ds.catalog.source_ids[ds.catalog.index_of("item11")] == ""
    tb.write_prepared(make(ds), tmp_path)
    data = load_prepared(tmp_path, "orig")
    assert data.catalog.source_ids == ds.catalog.source_ids
    assert data.catalog.item_ids == ds.catalog.item_ids


def test_folder_prepared_without_source_ids_still_loads(tmp_path):
    ds = tiny_dataset(ratings=False, name="old", originals=True)
    path = tb.write_prepared(make(ds), tmp_path)
    # A folder from before original ids were kept: catalog.json has only the three columns.
    cat = json.loads((path / "catalog.json").read_text())
    del cat["source_ids"]
    (path / "catalog.json").write_text(json.dumps(cat))
    data = load_prepared(tmp_path, "old")
    assert data.catalog.source_ids is None
    assert data.catalog.item_ids == ds.catalog.item_ids
    assert json.loads((path / "meta.json").read_text())["format_version"] == tb.FORMAT_VERSION


def test_existing_folder_needs_overwrite(tmp_path):
    ds = tiny_dataset()
    tb.write_prepared(make(ds), tmp_path)
    with pytest.raises(DataError, match="--overwrite"):
        tb.write_prepared(make(ds), tmp_path)
    tb.write_prepared(make(ds, n_neg=3), tmp_path, overwrite=True)
    assert load_prepared(tmp_path, "tiny").test_cases().negatives.shape == (5, 3)


def test_load_errors_tell_to_run_prepare(tmp_path, written):
    with pytest.raises(DataError, match="recsys_jax.data.prepare"):
        load_prepared(tmp_path, "absent")
    ds = tiny_dataset()
    path = tb.write_prepared(make(ds), tmp_path)
    meta = json.loads((path / "meta.json").read_text())
    meta["format_version"] = tb.FORMAT_VERSION + 1
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"format version .*recsys_jax\.data\.prepare"):
        load_prepared(tmp_path, "tiny")
    with pytest.raises(DataError, match="folder name"):
        load_prepared(tmp_path, "../escape")


def test_bad_num_negatives():
    with pytest.raises(DataError):
        make(tiny_dataset(), n_neg=0)
    with pytest.raises(DataError, match="negatives"):
        make(tiny_dataset(), n_neg=12)
