"""The one in-memory form every reader produces: a catalog of items and a table of interactions.

Dataset ids (user and item strings as the source wrote them) are kept only for output; inside
the project users and items are dense integer indices 0..n-1 in the order the reader met them.
Those indices are never written as text (docs/design.md, leakage rules): item indices choose the
text. Some sources number their items themselves (P5's "1", "2", ...); the catalog then also keeps
each item's original id (the Amazon ASIN) so people can name items by the id they know.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


class DataError(ValueError):
    """Bad or unusable input data; the message says which file/line or what to do."""


class UnknownItemError(KeyError):
    """An item id or title that is not in the catalog."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else "unknown item"


@dataclasses.dataclass
class Catalog:
    """Items: dataset id, display title, attribute strings (e.g. category names) and, when the
    source renumbered its items, each item's original id ("" for an item without one)."""

    item_ids: list[str]
    titles: list[str]
    attributes: list[list[str]]
    source_ids: list[str] | None = None  # None: the dataset ids already are the originals

    def __post_init__(self):
        if not (len(self.item_ids) == len(self.titles) == len(self.attributes)):
            raise DataError("catalog columns have different lengths")
        if self.source_ids is not None and len(self.source_ids) != len(self.item_ids):
            raise DataError("catalog source ids and item ids have different lengths")
        self._index = {iid: i for i, iid in enumerate(self.item_ids)}
        if len(self._index) != len(self.item_ids):
            raise DataError("catalog has duplicate item ids")
        if self.source_ids is not None:
            named = [s for s in self.source_ids if s]
            if len(set(named)) != len(named):  # an original id must name one item
                raise DataError("catalog has duplicate source ids")

    def __len__(self) -> int:
        return len(self.item_ids)

    def index_of(self, item_id: str) -> int:
        try:
            return self._index[str(item_id)]
        except KeyError:
            raise UnknownItemError(
                f"item id {item_id!r} is not in the catalog ({len(self)} items); "
                "use the dataset's own item ids as they appear in its files"
            ) from None

    def subset(self, keep: np.ndarray) -> Catalog:
        keep = [int(i) for i in keep]
        return Catalog(
            [self.item_ids[i] for i in keep],
            [self.titles[i] for i in keep],
            [self.attributes[i] for i in keep],
            None if self.source_ids is None else [self.source_ids[i] for i in keep],
        )


@dataclasses.dataclass
class Interactions:
    """Parallel columns, one row per (user, item) event. `order` breaks timestamp ties."""

    user: np.ndarray  # int32 user index
    item: np.ndarray  # int32 item index
    timestamp: np.ndarray  # int64; sources without time use the position in the user's sequence
    rating: np.ndarray | None = None  # float32 stars
    review: list[str] | None = None  # review text
    summary: list[str] | None = None  # review summary / headline

    def __post_init__(self):
        self.user = np.asarray(self.user, np.int32)
        self.item = np.asarray(self.item, np.int32)
        self.timestamp = np.asarray(self.timestamp, np.int64)
        if self.rating is not None:
            self.rating = np.asarray(self.rating, np.float32)
        n = len(self.user)
        for name in ("item", "timestamp", "rating", "review", "summary"):
            col = getattr(self, name)
            if col is not None and len(col) != n:
                raise DataError(f"interaction column {name!r} has {len(col)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.user)

    def take(self, rows: np.ndarray) -> Interactions:
        rows = np.asarray(rows)
        pick = lambda col: (
            None
            if col is None
            else (col[rows] if isinstance(col, np.ndarray) else [col[i] for i in rows])
        )
        return Interactions(
            self.user[rows],
            self.item[rows],
            self.timestamp[rows],
            pick(self.rating),
            pick(self.review),
            pick(self.summary),
        )


@dataclasses.dataclass
class Dataset:
    name: str
    user_ids: list[str]
    catalog: Catalog
    interactions: Interactions

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.catalog)

    @property
    def has_ratings(self) -> bool:
        return self.interactions.rating is not None

    @property
    def has_reviews(self) -> bool:
        return self.interactions.review is not None

    def sequences(self) -> list[np.ndarray]:
        """Each user's items in chronological order (stable on ties: source order kept)."""
        inter = self.interactions
        order = np.lexsort((np.arange(len(inter)), inter.timestamp, inter.user))
        users, items = inter.user[order], inter.item[order]
        bounds = np.searchsorted(users, np.arange(self.num_users + 1))
        return [items[bounds[u] : bounds[u + 1]] for u in range(self.num_users)]

    def summary_counts(self) -> dict:
        return {
            "users": self.num_users,
            "items": self.num_items,
            "interactions": len(self.interactions),
        }


def build_dataset(
    name: str,
    events: Sequence[tuple],
    catalog_rows: dict[str, tuple[str, list[str]]],
    *,
    with_rating=False,
    with_review=False,
    source="input",
    source_ids: dict[str, str] | None = None,
) -> Dataset:
    """Assemble a Dataset from raw events
    `(user_id, item_id, timestamp[, rating[, review, summary]])`.

    Users and items are numbered by first appearance. Items without catalog text get their id as
    title so every item can still be spelled; the caller decides whether that is acceptable.
    `source_ids` maps dataset item ids to original ids (e.g. P5 number -> ASIN); items it lacks
    get "" and a map naming none of the items leaves the catalog without the column.
    """
    if not events:
        raise DataError(f"{source}: no interactions found (empty or missing dataset)")
    user_index: dict[str, int] = {}
    item_index: dict[str, int] = {}
    users, items, times, ratings, reviews, summaries = [], [], [], [], [], []
    for ev in events:
        u = user_index.setdefault(str(ev[0]), len(user_index))
        i = item_index.setdefault(str(ev[1]), len(item_index))
        users.append(u)
        items.append(i)
        times.append(ev[2])
        if with_rating:
            ratings.append(ev[3])
        if with_review:
            reviews.append(ev[4])
            summaries.append(ev[5])
    item_ids = list(item_index)
    titles, attrs = [], []
    for iid in item_ids:
        title, attributes = catalog_rows.get(iid, ("", []))
        titles.append(title or iid)
        attrs.append(list(attributes))
    inter = Interactions(
        np.array(users),
        np.array(items),
        np.array(times),
        np.array(ratings, np.float32) if with_rating else None,
        reviews if with_review else None,
        summaries if with_review else None,
    )
    originals = None
    if source_ids:
        originals = [str(source_ids.get(iid, "")) for iid in item_ids]
        if not any(originals):
            originals = None
    return Dataset(name, list(user_index), Catalog(item_ids, titles, attrs, originals), inter)
