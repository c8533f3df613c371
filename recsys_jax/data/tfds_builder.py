"""Prepared splits on disk: a tensorflow-datasets builder writing `array_record` files.

`make_splits` computes the evaluation splits of docs/design.md, leakage rules in memory;
`write_prepared` writes them, with the catalog and user ids, into one folder per dataset:

    <data_dir>/<dataset>/
      meta.json                  counts, seeds, source, prepare options, format_version
      catalog.json               {"item_ids": [...], "titles": [...], "attributes": [[...], ...],
                                  "source_ids": [...]}  (original ids, when the source has them)
      users.json                 {"user_ids": [...]}   (position = internal user index)
      recsys_prepared/           tfds data_dir content, one builder config per record kind:
        train_sequences/1.0.0/   split "train":      {user, items[None]}
        validation_cases/1.0.0/  split "validation": {user, history[None], target}
        test_cases/1.0.0/        split "test":       {user, history[None], target, negatives[n]}
        ratings/1.0.0/           splits "rating_train", "rating_validation", "rating_test":
                                 {user, item, rating, timestamp, review, summary}
                                 (only when the dataset has ratings)

Every split of one tfds dataset shares one feature spec, so each record kind is its own builder
config. Read back without TensorFlow with `recsys_jax.data.prepared.load_prepared`, or directly:
`tfds.data_source("recsys_prepared/test_cases", data_dir="<data_dir>/<dataset>")["test"]`.

User and item numbers in the records are the internal dense indices (positions in users.json /
catalog.json), never the dataset's own ids. Records are written in a fixed order (user order for
the sequence kinds, row order for ratings): the same input and seed give the same records in
the same order. (The array_record bytes themselves can differ between runs: tf.train.Example
map fields are serialized in an order that varies per process. meta.json's `fingerprints`, a
sha256 per split over the records' canonical bytes, is reproducible.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from recsys_jax.data import splits as splits_lib
from recsys_jax.data.schema import Catalog, DataError, Dataset

FORMAT_VERSION = 1  # bump when the on-disk layout or record schema changes
BUILDER_NAME = "recsys_prepared"
TFDS_VERSION = "1.0.0"
NUM_TEST_NEGATIVES = 99
META_FILE, CATALOG_FILE, USERS_FILE = "meta.json", "catalog.json", "users.json"

# Record kind (builder config) -> the split names it holds.
CONFIG_SPLITS = {
    "train_sequences": ("train",),
    "validation_cases": ("validation",),
    "test_cases": ("test",),
    "ratings": ("rating_train", "rating_validation", "rating_test"),
}
SPLIT_CONFIG = {split: config for config, names in CONFIG_SPLITS.items() for split in names}

WORK_TAG = "preparing"  # in the name of the temporary folder a preparation writes into
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_dataset_name(name: str) -> str:
    if not name or not _NAME_RE.match(name):
        raise DataError(
            f"dataset name {name!r} is not usable as a folder name; pass --name with "
            "letters, digits, '_', '-' or '.' only"
        )
    return name


def dataset_dir(data_dir: str | os.PathLike, name: str) -> Path:
    """The folder holding one prepared dataset."""
    return Path(data_dir) / check_dataset_name(name)


# ---------------------------------------------------------------------------------------------
# In-memory splits


@dataclasses.dataclass
class PreparedSplits:
    """Everything `write_prepared` writes, computed by `make_splits`."""

    dataset: Dataset
    sequences: splits_lib.SequenceSplits
    test_negatives: np.ndarray  # [len(sequences.users), num_negatives] int32
    ratings: splits_lib.RatingSplits | None  # None when the dataset has no ratings
    seed: int
    num_negatives: int

    def split_sizes(self) -> dict[str, int]:
        n_users = len(self.sequences.users)
        sizes = {"train": n_users, "validation": n_users, "test": n_users}
        if self.ratings is not None:
            sizes.update(
                rating_train=len(self.ratings.train),
                rating_validation=len(self.ratings.valid),
                rating_test=len(self.ratings.test),
            )
        return sizes


def make_splits(
    dataset: Dataset, *, seed: int = 0, num_negatives: int = NUM_TEST_NEGATIVES
) -> PreparedSplits:
    """Leave-one-out sequences, seeded test negatives and (with ratings) the 80/10/10 split.

    Users with fewer than 3 interactions are left out of the sequence splits with a warning
    (`splits.leave_one_out`). Negatives use `seed`; the rating split uses `seed` as well (they
    are independent draws from separate generators).
    """
    if num_negatives < 1:
        raise DataError(f"num_negatives must be >= 1, got {num_negatives}")
    seq = splits_lib.leave_one_out(dataset)
    negatives = splits_lib.sample_negatives(dataset, seq.users, n=num_negatives, seed=seed)
    ratings = splits_lib.random_split(dataset, seed=seed) if dataset.has_ratings else None
    return PreparedSplits(dataset, seq, negatives, ratings, int(seed), int(num_negatives))


# ---------------------------------------------------------------------------------------------
# The tfds builder


class PreparedConfig(tfds.core.BuilderConfig):
    """One record kind; the split names it holds are `CONFIG_SPLITS[name]`."""


def _features(config_name: str, num_negatives: int | None) -> tfds.features.FeaturesDict:
    f = tfds.features
    ints = lambda: f.Tensor(shape=(None,), dtype=np.int32)
    if config_name == "train_sequences":
        spec = {"user": f.Scalar(np.int32), "items": ints()}
    elif config_name == "validation_cases":
        spec = {"user": f.Scalar(np.int32), "history": ints(), "target": f.Scalar(np.int32)}
    elif config_name == "test_cases":
        spec = {
            "user": f.Scalar(np.int32),
            "history": ints(),
            "target": f.Scalar(np.int32),
            # Fixed length when writing; a reader built from this class without knowing the
            # count (tfds.data_source by name) decodes the same bytes as a 1-d array.
            "negatives": f.Tensor(shape=(num_negatives,), dtype=np.int32),
        }
    elif config_name == "ratings":
        spec = {
            "user": f.Scalar(np.int32),
            "item": f.Scalar(np.int32),
            "rating": f.Scalar(np.float32),
            "timestamp": f.Scalar(np.int64),
            "review": f.Text(),
            "summary": f.Text(),
        }
    else:
        raise ValueError(f"unknown config {config_name!r}")
    return f.FeaturesDict(spec)


class RecsysPrepared(tfds.core.GeneratorBasedBuilder):
    """Writes `PreparedSplits` (passed to the constructor) for one record kind (config).

    Readers do not need this class (`tfds.builder_from_directory` reads the files alone); it is
    registered with tfds as `recsys_prepared`, so `tfds.data_source("recsys_prepared/<config>",
    data_dir=<dataset folder>)` also works once this module is imported.
    """

    VERSION = tfds.core.Version(TFDS_VERSION)
    RELEASE_NOTES = {TFDS_VERSION: f"recsys_jax prepared data, format_version {FORMAT_VERSION}"}
    BUILDER_CONFIGS = [PreparedConfig(name=name) for name in CONFIG_SPLITS]
    # Nothing is ever downloaded. Setting this also keeps tfds from probing for a checksums
    # file next to this module (that probe needs the optional `importlib_resources` package).
    url_infos = None

    def __init__(
        self,
        *,
        prepared: PreparedSplits | None = None,
        num_negatives: int | None = None,
        progress: bool = False,
        **kwargs: Any,
    ):
        self._prepared = prepared
        self._progress = progress
        self.fingerprints: dict[str, str] = {}  # split -> sha256 of its records, once written
        self._num_negatives = prepared.num_negatives if prepared is not None else num_negatives
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        name = self.builder_config.name
        description = "recsys_jax prepared splits"
        if self._prepared is not None:
            description += f" of {self._prepared.dataset.name}"
        return tfds.core.DatasetInfo(
            builder=self,
            description=description,
            features=_features(name, self._num_negatives),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        if self._prepared is None:
            raise DataError("RecsysPrepared writes only splits passed in as `prepared=`")
        return {
            split: self._generate_examples(split)
            for split in CONFIG_SPLITS[self.builder_config.name]
        }

    # tfds prints "Downloading and preparing ..." banners; nothing is downloaded here.
    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
        size = self._prepared.split_sizes()[split]
        digest = hashlib.sha256()
        with tqdm.tqdm(
            total=size,
            desc=f"writing {split}",
            unit=" records",
            leave=False,
            disable=not self._progress,
        ) as bar:
            for key, record in self._records(split):
                _update_fingerprint(digest, record)
                yield key, record
                bar.update()
        self.fingerprints[split] = digest.hexdigest()

    def _records(self, split: str) -> Iterator[tuple[int, dict]]:
        p = self._prepared
        seq = p.sequences
        if split == "train":
            for k, u in enumerate(seq.users):
                yield k, {"user": u, "items": seq.train[k]}
        elif split == "validation":
            for k, u in enumerate(seq.users):
                yield k, {"user": u, "history": seq.valid_history(k), "target": seq.valid_target[k]}
        elif split == "test":
            for k, u in enumerate(seq.users):
                yield (
                    k,
                    {
                        "user": u,
                        "history": seq.test_history(k),
                        "target": seq.test_target[k],
                        "negatives": p.test_negatives[k],
                    },
                )
        else:
            rows = {
                "rating_train": p.ratings.train,
                "rating_validation": p.ratings.valid,
                "rating_test": p.ratings.test,
            }[split]
            inter = p.dataset.interactions
            for row in rows.tolist():
                yield (
                    row,
                    {
                        "user": inter.user[row],
                        "item": inter.item[row],
                        "rating": inter.rating[row],
                        "timestamp": inter.timestamp[row],
                        "review": inter.review[row] if inter.review is not None else "",
                        "summary": inter.summary[row] if inter.summary is not None else "",
                    },
                )


def _update_fingerprint(digest, record: dict) -> None:
    """Canonical bytes of one record (sorted keys, fixed dtypes). The array_record files hold
    tf.train.Example protos whose map-field order varies between processes, so equal content
    can differ byte-wise; these fingerprints (in meta.json) do not."""
    for key in sorted(record):
        value = record[key]
        digest.update(key.encode())
        if isinstance(value, str):
            digest.update(value.encode("utf-8"))
        else:
            arr = np.asarray(value)
            digest.update(arr.dtype.str.encode() + str(arr.shape).encode() + arr.tobytes())
        digest.update(b"\x00")


# ---------------------------------------------------------------------------------------------
# Writing one prepared dataset folder


def write_prepared(
    prepared: PreparedSplits,
    data_dir: str | os.PathLike,
    *,
    source: dict | None = None,
    options: dict | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write the folder described in the module docstring and return its path.

    Written into a temporary sibling folder first and moved into place at the end, so a failed
    run never leaves a half-written dataset; an existing folder is replaced only with
    `overwrite=True`.
    """
    ds = prepared.dataset
    final = dataset_dir(data_dir, ds.name)
    if final.exists() and not overwrite:
        raise DataError(f"{final} already exists; pass --overwrite to prepare it again")
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_work_dirs(final)
    prefix = f".{ds.name}.{WORK_TAG}-{_HOST}-{os.getpid()}-"
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    try:
        downloads = work / ".downloads"  # tfds wants one; nothing is ever downloaded
        configs = [c for c in CONFIG_SPLITS if c != "ratings" or prepared.ratings is not None]
        fingerprints: dict[str, str] = {}
        tfds_bars = getattr(tfds.core.utils.tqdm_utils, "_active", True)
        tfds.display_progress_bar(False)  # our own bars (per split) replace tfds' nested ones
        try:
            for config in configs:
                builder = RecsysPrepared(
                    prepared=prepared,
                    config=config,
                    data_dir=str(work),
                    file_format="array_record",
                    progress=progress,
                )
                builder.download_and_prepare(download_dir=str(downloads))
                fingerprints.update(builder.fingerprints)
        finally:
            tfds.display_progress_bar(tfds_bars)
        shutil.rmtree(downloads, ignore_errors=True)
        _write_json(work / CATALOG_FILE, catalog_json(ds.catalog))
        _write_json(work / USERS_FILE, {"user_ids": ds.user_ids})
        meta = build_meta(prepared, source=source, options=options)
        meta["fingerprints"] = {split: fingerprints[split] for split in meta["splits"]}
        _write_json(work / META_FILE, meta)
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return final


def remove_stale_work_dirs(final: Path) -> list[Path]:
    """Delete the temporary folders that killed preparations of this dataset left beside
    `final`. Kept: folders of a process still running on this machine, and of other machines
    (a shared data_dir), which cannot be checked from here. -> the removed folders."""
    # `.<name>.preparing-<host>-<pid>-<random>`, or `.<name>.<random>` as older versions
    # named them; mkdtemp's random part has no dots, so another dataset's folders never match.
    pattern = re.compile(
        rf"^\.{re.escape(final.name)}\.(?:{WORK_TAG}-([0-9a-f]{{8}})-(\d+)-)?[a-z0-9_]+$"
    )
    removed = []
    for path in final.parent.iterdir() if final.parent.is_dir() else ():
        match = pattern.match(path.name)
        if not match or not path.is_dir():
            continue
        if match[1] and (match[1] != _HOST or _process_alive(int(match[2]))):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but belongs to another user
        return True
    return True


def catalog_json(catalog: Catalog) -> dict:
    """The catalog.json object. `source_ids` is an optional key, not a new format version:
    folders written before it existed still load (without original ids), and catalogs that
    have none are written exactly as before."""
    obj = {"item_ids": catalog.item_ids, "titles": catalog.titles, "attributes": catalog.attributes}
    if catalog.source_ids is not None:
        obj["source_ids"] = catalog.source_ids
    return obj


def build_meta(
    prepared: PreparedSplits, *, source: dict | None = None, options: dict | None = None
) -> dict:
    ds = prepared.dataset
    return {
        "format_version": FORMAT_VERSION,
        "dataset": ds.name,
        "counts": {
            **ds.summary_counts(),
            "sequence_users": int(len(prepared.sequences.users)),
            "users_left_out_of_sequences": int(prepared.sequences.dropped_users),
        },
        "splits": prepared.split_sizes(),
        "has_ratings": ds.has_ratings,
        "has_reviews": ds.has_reviews,
        "num_negatives": prepared.num_negatives,
        "seeds": {
            "test_negatives": prepared.seed,
            "rating_split": prepared.seed if prepared.ratings is not None else None,
        },
        "source": source or {},
        "options": options or {},
        "tfds": {
            "builder": BUILDER_NAME,
            "version": TFDS_VERSION,
            "configs": {
                c: list(s)
                for c, s in CONFIG_SPLITS.items()
                if c != "ratings" or prepared.ratings is not None
            },
        },
    }


def _write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1 if path.name == META_FILE else None)
        f.write("\n")
