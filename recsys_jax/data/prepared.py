"""Reading a prepared dataset folder (written by `recsys_jax.data.prepare`) without TensorFlow.

    data = load_prepared("data_prepared", "amazon_beauty")
    data.catalog                      # schema.Catalog (item ids, titles, attributes[, source ids])
    data.user_ids                     # dataset user ids; position = internal user index
    data.source("train")              # tfds ArrayRecordDataSource: len() and random access
    data.train_sequences()            # list of int32 arrays, one per sequence user
    data.test_cases()                 # EvalCases(users, histories, targets, negatives)

Split names: "train", "validation", "test" (leave-one-out sequences) and, when the dataset has
ratings, "rating_train", "rating_validation", "rating_test". Record layouts are listed in
`recsys_jax.data.tfds_builder`. Text fields (review, summary) come back from the data sources
as UTF-8 `bytes`; the convenience accessors decode them to `str`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from recsys_jax.data.schema import Catalog, DataError
from recsys_jax.data.tfds_builder import (
    BUILDER_NAME,
    CATALOG_FILE,
    CONFIG_SPLITS,
    FORMAT_VERSION,
    META_FILE,
    SPLIT_CONFIG,
    TFDS_VERSION,
    USERS_FILE,
    check_dataset_name,
)

DEFAULT_DATA_DIR_ENV = "RECSYS_JAX_DATA_DIR"
DEFAULT_DATA_DIR = "data_prepared"


def default_data_dir() -> str:
    """`$RECSYS_JAX_DATA_DIR` if set, else `./data_prepared`."""
    return os.environ.get(DEFAULT_DATA_DIR_ENV) or DEFAULT_DATA_DIR


@dataclasses.dataclass
class EvalCases:
    """Validation or test cases of the leave-one-out split, in user order."""

    users: np.ndarray  # [U] int32 internal user index
    histories: list[np.ndarray]  # per case, int32 items in chronological order
    targets: np.ndarray  # [U] int32 the held-out item
    negatives: np.ndarray | None = None  # [U, num_negatives] int32 (test only)

    def __len__(self) -> int:
        return len(self.users)


def _prepare_hint(dataset: str) -> str:
    if dataset == "amazon_beauty":
        cmd = "python -m recsys_jax.data.prepare --dataset amazon_beauty"
    else:
        cmd = f"python -m recsys_jax.data.prepare --path DIR --format FORMAT --name {dataset}"
    return f"run `{cmd} --data-dir DATA_DIR` first"


class PreparedData:
    """One prepared dataset folder; data sources are opened lazily and cached."""

    def __init__(self, path: Path, meta: dict, catalog: Catalog, user_ids: list[str]):
        self.path = path
        self.meta = meta
        self.catalog = catalog
        self.user_ids = user_ids
        self._sources: dict[str, Any] = {}
        self._cache: dict[tuple, Any] = {}

    def _cached(self, key: tuple, build):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    # -- summary -------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.meta["dataset"]

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.catalog)

    @property
    def has_ratings(self) -> bool:
        return bool(self.meta["has_ratings"])

    @property
    def has_reviews(self) -> bool:
        return bool(self.meta["has_reviews"])

    @property
    def num_negatives(self) -> int:
        return int(self.meta["num_negatives"])

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.meta["splits"])

    def split_size(self, split: str) -> int:
        self._check_split(split)
        return int(self.meta["splits"][split])

    def __repr__(self) -> str:
        return (
            f"PreparedData({self.name!r}, users={self.num_users}, items={self.num_items}, "
            f"splits={self.meta['splits']})"
        )

    # -- random access -------------------------------------------------------------------------

    def _check_split(self, split: str) -> None:
        if split not in self.meta["splits"]:
            extra = " (this dataset has no ratings)" if split.startswith("rating_") else ""
            raise DataError(
                f"{self.path}: no split {split!r}{extra}; splits are {list(self.meta['splits'])}"
            )

    def source(self, split: str):
        """The tfds `ArrayRecordDataSource` of one split: `len()`, `[i]`, `__getitems__`."""
        self._check_split(split)
        if split not in self._sources:
            import tensorflow_datasets as tfds  # heavy import, only when data is read

            config = SPLIT_CONFIG[split]
            version_dir = self.path / BUILDER_NAME / config / TFDS_VERSION
            if not version_dir.is_dir():
                raise DataError(
                    f"{version_dir} is missing; the prepared folder is incomplete, "
                    f"{_prepare_hint(self.name)} (with --overwrite)"
                )
            builder = tfds.builder_from_directory(str(version_dir))
            for name in CONFIG_SPLITS[config]:
                self._sources[name] = builder.as_data_source(split=name)
        return self._sources[split]

    @property
    def sources(self) -> dict[str, Any]:
        """All splits' data sources by split name."""
        return {split: self.source(split) for split in self.splits}

    def records(self, split: str) -> list[dict]:
        """Every record of a split, decoded, in stored order."""
        src = self.source(split)
        return list(src.__getitems__(list(range(len(src))))) if len(src) else []

    # -- convenience accessors (cached: each split is decoded once) -----------------------------

    def _train(self) -> tuple[np.ndarray, list[np.ndarray]]:
        def build():
            recs = self.records("train")
            return (
                np.array([r["user"] for r in recs], np.int32),
                [np.asarray(r["items"], np.int32) for r in recs],
            )

        return self._cached(("train",), build)

    def train_users(self) -> np.ndarray:
        """[U] internal user index of each training sequence (same order as train_sequences)."""
        return self._train()[0]

    def train_sequences(self) -> list[np.ndarray]:
        """Training part of each sequence user's history (validation and test items removed)."""
        return self._train()[1]

    def _cases(self, split: str) -> EvalCases:
        def build():
            recs = self.records(split)
            negatives = None
            if split == "test":
                negatives = np.array([r["negatives"] for r in recs], np.int32).reshape(
                    len(recs), self.num_negatives
                )
            return EvalCases(
                np.array([r["user"] for r in recs], np.int32),
                [np.asarray(r["history"], np.int32) for r in recs],
                np.array([r["target"] for r in recs], np.int32),
                negatives,
            )

        return self._cached((split,), build)

    def validation_cases(self) -> EvalCases:
        return self._cases("validation")

    def test_cases(self) -> EvalCases:
        """Test histories include the validation item; `negatives` are the fixed seeded ones."""
        return self._cases("test")

    def rating_rows(self, split: str = "rating_train") -> dict[str, Any]:
        """Columns of a rating split: user, item (int32), rating (float32), timestamp (int64)
        arrays and review, summary (lists of str; empty strings when the source had none)."""
        if not split.startswith("rating_"):
            raise DataError(f"rating_rows takes a rating split, not {split!r}")
        return self._cached((split,), lambda: self._rating_rows(split))

    def _rating_rows(self, split: str) -> dict[str, Any]:
        recs = self.records(split)
        text = lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v)
        return {
            "user": np.array([r["user"] for r in recs], np.int32),
            "item": np.array([r["item"] for r in recs], np.int32),
            "rating": np.array([r["rating"] for r in recs], np.float32),
            "timestamp": np.array([r["timestamp"] for r in recs], np.int64),
            "review": [text(r["review"]) for r in recs],
            "summary": [text(r["summary"]) for r in recs],
        }


def _read_json(path: Path, dataset: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path} is missing; {_prepare_hint(dataset)}") from None
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}:{e.lineno}: not valid JSON ({e.msg}); "
            f"{_prepare_hint(dataset)} with --overwrite"
        ) from None


def load_prepared(data_dir: str | os.PathLike | None, dataset: str) -> PreparedData:
    """Open `<data_dir>/<dataset>` as written by `prepare`; DataError if it is missing, from
    another format version, or incomplete. `data_dir=None` uses `default_data_dir()`."""
    data_dir = Path(data_dir if data_dir is not None else default_data_dir())
    path = data_dir / check_dataset_name(dataset)
    if not (path / META_FILE).is_file():
        raise DataError(
            f"no prepared dataset {dataset!r} in {data_dir} "
            f"({path / META_FILE} not found); {_prepare_hint(dataset)}"
        )
    meta = _read_json(path / META_FILE, dataset)
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise DataError(
            f"{path} was prepared in format version {version}, this code reads "
            f"version {FORMAT_VERSION}; {_prepare_hint(dataset)} with --overwrite"
        )
    cat = _read_json(path / CATALOG_FILE, dataset)
    users = _read_json(path / USERS_FILE, dataset)
    try:
        # Folders prepared before original ids were kept have no "source_ids": load them as None.
        source_ids = cat.get("source_ids")
        catalog = Catalog(
            list(cat["item_ids"]),
            list(cat["titles"]),
            [list(a) for a in cat["attributes"]],
            None if source_ids is None else [str(s) for s in source_ids],
        )
        user_ids = list(users["user_ids"])
    except (KeyError, TypeError, AttributeError):
        raise DataError(
            f"{path}: catalog.json or users.json lacks expected keys; "
            f"{_prepare_hint(dataset)} with --overwrite"
        ) from None
    counts = meta.get("counts", {})
    if counts.get("items") != len(catalog) or counts.get("users") != len(user_ids):
        raise DataError(
            f"{path}: catalog/users do not match meta.json counts; "
            f"{_prepare_hint(dataset)} with --overwrite"
        )
    return PreparedData(path, meta, catalog, user_ids)
