"""`title` index (RecSysLLM): an item is written as its title.

Titles are whitespace-normalised. Two items with the same title must still be told apart, so
duplicates get a suffix " (2)", " (3)", ... in catalog order: the first item with a title keeps
it plain. A suffixed title never takes a string that another item already spells (a catalog may
hold a real title "Foo (2)"). An empty title becomes "Untitled item" (then deduplicated the same
way), which stays readable and never exposes the dataset's ids.

Very long titles (Amazon has some of 100+ words) are cut to `max_words` words (default 24,
0 = no cut) before deduplication: prompts have a token budget and a 200-token item would not
fit one. Nothing is learned from interactions, so `train_sequences` is only validated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from recsys_jax.data.schema import Catalog
from recsys_jax.indexing.base import ItemIndex, check_train_sequences

UNTITLED = "Untitled item"


def normalise_title(text: str) -> str:
    """Collapse runs of whitespace (spaces, tabs, newlines) to one space and strip the ends."""
    return " ".join(str(text).split())


DEFAULT_MAX_WORDS = 24


def unique_titles(titles: Sequence[str], max_words: int = 0) -> list[str]:
    """Normalised (and cut to `max_words` when > 0) titles made unique; the first occurrence
    of each title keeps it plain."""
    cut = (lambda t: " ".join(t.split()[:max_words])) if max_words > 0 else (lambda t: t)
    base = [cut(normalise_title(t)) or UNTITLED for t in titles]
    spelled: list[str | None] = [None] * len(base)
    taken: set[str] = set()
    for i, t in enumerate(base):  # Reserve every plain title for its first occurrence.
        if t not in taken:
            taken.add(t)
            spelled[i] = t
    next_suffix: dict[str, int] = {}
    for i, t in enumerate(base):
        if spelled[i] is not None:
            continue
        n = next_suffix.get(t, 2)
        while f"{t} ({n})" in taken:
            n += 1
        spelled[i] = f"{t} ({n})"
        taken.add(spelled[i])
        next_suffix[t] = n + 1
    return spelled  # type: ignore[return-value]


class TitleIndex(ItemIndex):
    kind = "title"

    def __init__(self, titles: Sequence[str]):
        self._titles = list(titles)
        self._item_of = {t: i for i, t in enumerate(self._titles)}
        if len(self._item_of) != len(self._titles):
            raise ValueError("title index: spelled titles are not unique")
        self._casefolded: dict[str, str] | None = None

    @classmethod
    def fit(
        cls, catalog: Catalog, train_sequences, seed: int = 0, max_words: int = DEFAULT_MAX_WORDS
    ) -> TitleIndex:
        del seed  # deterministic without randomness
        check_train_sequences(train_sequences, len(catalog))
        return cls(unique_titles(catalog.titles, max_words))

    @property
    def num_items(self) -> int:
        return len(self._titles)

    def spell(self, item: int) -> str:
        return self._titles[self._check_item(item)]

    def item_of(self, text: str) -> int:
        key = normalise_title(text)
        try:
            return self._item_of[key]
        except KeyError:
            pass
        if self._casefolded is None:
            self._casefolded = {}
            for t in self._titles:
                self._casefolded.setdefault(t.casefold(), t)
        near = self._casefolded.get(key.casefold())
        hint = (
            f"did you mean {near!r}? titles match case-sensitively"
            if near
            else "titles must match exactly (after whitespace normalisation); duplicate titles "
            "carry a suffix such as ' (2)'"
        )
        raise self._unknown(text, hint)

    def added_tokens(self) -> list[str]:
        return []

    def _state(self) -> dict[str, Any]:
        return {"titles": list(self._titles)}

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> TitleIndex:
        return cls(state["titles"])
