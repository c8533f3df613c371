import numpy as np
import pytest

from recsys_jax.data.schema import Catalog, Dataset, Interactions
from recsys_jax.data.splits import leave_one_out
from recsys_jax.indexing import build_index
from recsys_jax.prompts.builders import PromptConfig, PromptFactory
from recsys_jax.prompts.templates import TEMPLATES
from recsys_jax.tokenizer import build_tokenizer

WORDS = "red blue green nail polish cream soap hair oil mask brush gel lip eye tint balm".split()


def make_dataset(num_users=40, num_items=60, seed=0, with_reviews=True):
    rng = np.random.default_rng(seed)
    users, items, times, ratings, reviews, summaries = [], [], [], [], [], []
    for u in range(num_users):
        seq = rng.choice(num_items, size=int(rng.integers(3, 9)), replace=False)
        for t, i in enumerate(seq):
            users.append(u), items.append(int(i)), times.append(t)
            ratings.append(float(rng.integers(1, 6)))
            reviews.append(f"The {WORDS[i % len(WORDS)]} works well. I would buy again.")
            summaries.append(f"nice {WORDS[(i + 3) % len(WORDS)]}")
    titles = [
        f"{WORDS[i % 16].title()} {WORDS[(i * 7) % 16]} {i % 5} pack" for i in range(num_items)
    ]
    catalog = Catalog(
        [str(i + 100) for i in range(num_items)],
        titles,
        [["Beauty", WORDS[i % 16]] for i in range(num_items)],
    )
    inter = Interactions(
        np.array(users),
        np.array(items),
        np.array(times),
        np.array(ratings) if with_reviews else None,
        reviews if with_reviews else None,
        summaries if with_reviews else None,
    )
    return Dataset("toy", [f"U{u}" for u in range(num_users)], catalog, inter)


@pytest.fixture(scope="module")
def toy():
    ds = make_dataset()
    splits = leave_one_out(ds)
    index = build_index("title", ds.catalog, splits.train)
    texts = (
        [t.text for t in TEMPLATES.values()] + ds.catalog.titles + [f"user_{u}" for u in range(50)]
    )
    tok = build_tokenizer(texts, index, vocab_size=400)
    known = [set(s.tolist()) for s in ds.sequences()]
    factory = PromptFactory(tok, index, ds.num_items, known, PromptConfig(max_length=160))
    return ds, splits, index, tok, factory
