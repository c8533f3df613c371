"""Item references: the strings people use to name an item, resolved to internal indices.

People know items by their original ids (Amazon ASINs), not by the numbers a source such as P5
gave them, and sometimes only by title. One resolver turns any of these into the internal item
index, and one rule chooses the id shown back: the original id where the source has one, the
dataset id otherwise.

    resolver = ItemResolver(prepared.catalog)
    resolver.resolve("B004756YJA")        # original id (ASIN)
    resolver.resolve("1")                 # dataset id, still accepted
    resolver.resolve("OPI Red Shatter Crackle Nail Polish E55 New")   # exact, unique title
    resolver.display_id(0)                # "B004756YJA"
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from recsys_jax.data.schema import Catalog, DataError, UnknownItemError

MAX_SUGGESTIONS = 3
MAX_LISTED = 10  # ids listed for an ambiguous title


class ItemResolver:
    """Resolves item references (original id, dataset id or exact title) against one catalog."""

    def __init__(self, catalog: Catalog):
        self._init(catalog.item_ids, catalog.titles, catalog.source_ids)

    @classmethod
    def from_lists(
        cls, item_ids: Sequence[str], titles: Sequence[str], source_ids: Sequence[str] | None = None
    ) -> ItemResolver:
        """For holders of the bare columns (e.g. a serving bundle) rather than a Catalog."""
        resolver = cls.__new__(cls)
        resolver._init(item_ids, titles, source_ids)
        return resolver

    def _init(self, item_ids, titles, source_ids) -> None:
        self.item_ids = [str(i) for i in item_ids]
        self.titles = [str(t) for t in titles]
        if len(self.titles) != len(self.item_ids):
            raise DataError("item ids and titles have different lengths")
        if source_ids is not None and len(source_ids) != len(self.item_ids):
            raise DataError("item ids and source ids have different lengths")
        self._by_dataset_id = {iid: i for i, iid in enumerate(self.item_ids)}
        if len(self._by_dataset_id) != len(self.item_ids):
            raise DataError("duplicate item ids")
        # "" marks an item without an original id; it falls back to its dataset id.
        self._by_source_id: dict[str, int] = {}
        self.display_ids = list(self.item_ids)
        for i, sid in enumerate(source_ids or ()):
            sid = str(sid)
            if sid:
                if sid in self._by_source_id:
                    raise DataError(f"original id {sid!r} names more than one item")
                self._by_source_id[sid] = i
                self.display_ids[i] = sid
        self._by_title: dict[str, list[int]] = {}
        for i, title in enumerate(self.titles):
            self._by_title.setdefault(title, []).append(i)

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def has_source_ids(self) -> bool:
        return bool(self._by_source_id)

    def display_id(self, index: int) -> str:
        """The id to show for an item: its original id when known, else its dataset id."""
        return self.display_ids[index]

    def resolve(self, ref) -> int:
        """An original id, a dataset id or an exact title (in that order) -> item index."""
        ref = str(ref)
        hit = self._by_source_id.get(ref)
        if hit is None:
            hit = self._by_dataset_id.get(ref)
        if hit is not None:
            return hit
        hits = self._by_title.get(ref)
        if hits and len(hits) == 1:
            return hits[0]
        if hits:
            ids = [self.display_ids[i] for i in hits[:MAX_LISTED]]
            more = f" and {len(hits) - MAX_LISTED} more" if len(hits) > MAX_LISTED else ""
            raise UnknownItemError(
                f"title {ref!r} names {len(hits)} items; give the item's id "
                f"instead (one of {', '.join(ids)}{more})"
            )
        raise UnknownItemError(self._unknown_message(ref))

    def resolve_many(self, refs: Iterable) -> list[int]:
        return [self.resolve(ref) for ref in refs]

    def _unknown_message(self, ref: str) -> str:
        kind = "an original item id such as an ASIN" if self.has_source_ids else "a dataset item id"
        example = f" (e.g. {self.display_ids[0]!r})" if self.item_ids else ""
        message = (
            f"unknown item {ref!r}: not in the {len(self)}-item catalog. Accepted: "
            f"{kind}{example} or an exact title"
        )
        suggestions = self.suggest(ref)
        if suggestions:
            message += f"; did you mean {' or '.join(repr(s) for s in suggestions)}?"
        return message

    def suggest(self, ref: str, n: int = MAX_SUGGESTIONS) -> list[str]:
        """Display ids and titles closest to `ref`. Only computed for errors: on an 18k-item
        catalog it takes about 0.1 s, far too slow to pay on every lookup."""
        candidates = dict.fromkeys(self.display_ids + self.titles)
        return difflib.get_close_matches(str(ref), list(candidates), n=n)
