"""`item_token` index: one new vocabulary token per item, `<item_K>`.

K comes from a seeded random permutation of 1..n, so neither the token name nor its position in
the tokenizer's vocabulary (`added_tokens` lists them in K order) reveals the dataset's ids or
the internal item order.
"""

from __future__ import annotations

import re

from recsys_jax.indexing.base import NumberedIndex

_TOKEN = re.compile(r"<item_([1-9][0-9]*)>")


class ItemTokenIndex(NumberedIndex):
    kind = "item_token"

    def spell(self, item: int) -> str:
        return f"<item_{self._number_of(item)}>"

    def item_of(self, text: str) -> int:
        match = _TOKEN.fullmatch(str(text).strip())
        if match:
            item = self._item_of_number_or_none(int(match.group(1)))
            if item is not None:
                return item
        raise self._unknown(text, f"item tokens are <item_1> .. <item_{self.num_items}>")

    def added_tokens(self) -> list[str]:
        return [f"<item_{k}>" for k in range(1, self.num_items + 1)]
