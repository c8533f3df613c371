import dataclasses

import numpy as np
import pytest

from recsys_jax.prompts.builders import PromptFactory
from recsys_jax.prompts.mixture import WINDOW_ENDS, TrainingMixture, active_families, window_end

ALL = {
    "sequential": 1.0,
    "direct": 1.0,
    "sequence_text": 0.5,
    "rating": 1.0,
    "explanation": 1.0,
    "review": 1.0,
}


def test_families_without_data_are_skipped_with_a_message():
    said = []
    active = active_families(ALL, has_ratings=False, has_reviews=False, log=said.append)
    assert set(active) == {"sequential", "direct", "sequence_text"}
    assert any("rating" in s for s in said) and any("review text" in s for s in said)
    with pytest.raises(ValueError, match="no task family"):
        active_families({"rating": 1.0}, has_ratings=False, has_reviews=False, log=said.append)


def _item_spans_as_items(tok, index, ex):
    out = []
    for s, e in ex.entity_spans:
        out.append(index.item_of(tok.decode(ex.ids[s:e])))
    return out


def test_no_training_example_contains_a_validation_or_test_item(toy):
    """Leakage (docs/design.md, leakage rules): every item any training example mentions — history,
    target, candidates, yes/no probes — comes from the user's training part or is a negative the
    user never touched."""
    ds, splits, index, tok, factory = toy
    mix = TrainingMixture(
        factory, {"sequential": 1.0, "direct": 1.0, "sequence_text": 0.5, "item_sequence": 0.5}
    )
    rng = np.random.default_rng(0)
    for k, user in enumerate(splits.users):
        held_out = {int(splits.valid_target[k]), int(splits.test_target[k])}
        train = list(splits.train[k])
        if len(train) < 2:
            continue
        for _ in range(15):
            ex = mix.from_sequence(int(user), train, rng)
            mentioned = set(_item_spans_as_items(tok, index, ex))
            assert not mentioned & held_out, (user, ex.task)


def test_mixture_draws_every_family_with_seeded_determinism(toy):
    ds, splits, index, tok, factory = toy
    mix = TrainingMixture(factory, ALL)
    tasks = []
    for seed in (0, 0):
        rng = np.random.default_rng(seed)
        tasks.append(
            [
                mix.from_sequence(int(u), list(t), rng).task
                for u, t in zip(splits.users, splits.train)
                if len(t) >= 2
            ]
        )
    assert tasks[0] == tasks[1]
    assert {t.split("-")[0] for t in tasks[0] if t != "sequence_text"} == {"2", "5"}
    assert "sequence_text" in tasks[0]
    inter = ds.interactions
    rng = np.random.default_rng(0)
    row_tasks = {
        mix.from_row(
            int(inter.user[r]),
            int(inter.item[r]),
            float(inter.rating[r]),
            inter.review[r],
            inter.summary[r],
            rng,
        ).task.split("-")[0]
        for r in range(60)
    }
    assert row_tasks == {"1", "3", "4"}


def test_sequence_text_has_entities_and_no_targets(toy):
    ds, splits, index, tok, factory = toy
    mix = TrainingMixture(factory, {"sequence_text": 1.0})
    ex = mix.from_sequence(0, list(splits.train[0]) + [1, 2], np.random.default_rng(0))
    assert ex.target_spans == [] and len(ex.entity_spans) == len(splits.train[0]) + 2
    assert ex.sentence_spans == [(0, len(ex.ids))]


@pytest.mark.parametrize("objective", ["causal", "infill"])
def test_item_sequence_is_the_items_alone_with_its_objectives_targets(toy, objective):
    """No prompt words: the example is exactly the spelled items of the most recent window
    (max_history inputs + 1 target); causal makes the whole open-ended sequence one target,
    infill only the last item."""
    ds, splits, index, tok, factory = toy
    factory = PromptFactory(
        tok,
        index,
        ds.num_items,
        factory.known_items,
        dataclasses.replace(factory.cfg, sequence_objective=objective, max_history=4),
    )
    mix = TrainingMixture(factory, {"item_sequence": 1.0})
    train = [int(i) for i in splits.train[0]] + [3, 5, 7]
    ex = mix.from_sequence(0, train, np.random.default_rng(0))
    items = _item_spans_as_items(tok, index, ex)
    assert len(items) == 5 and items == train[train.index(items[0]) :][:5]
    assert np.array_equal(ex.ids, np.concatenate([tok.encode(index.spell(i)) for i in items]))
    if objective == "causal":
        assert ex.target_spans == [(0, len(ex.ids))] and ex.open_end
    else:
        assert ex.target_spans == [tuple(ex.entity_spans[-1])] and not ex.open_end
    # Longer than the window: every window end is drawn at some point, the last most often.
    ends = {
        tuple(_item_spans_as_items(tok, index, mix.from_sequence(0, train, r)))[-1]
        for r in map(np.random.default_rng, range(40))
    }
    assert ends == set(train[4:])


@pytest.mark.parametrize("mode", WINDOW_ENDS)
def test_window_ends_cover_the_most_recent_items_as_the_mode_says(mode):
    """A window of 11 items in a sequence of 100: the last item is a target only in windows
    ending at it. "even" makes it as frequent as a middle item; "uniform" leaves it rare."""
    rng = np.random.default_rng(0)
    length, window, draws = 100, 11, 4000
    ends = [window_end(length, window, mode, rng) for _ in range(draws)]
    assert all(window <= e <= length for e in ends)
    targets = np.zeros(length)
    for e in ends:
        targets[e - window + 1 : e] += 1  # the window's first item is context only
    last, middle = targets[-1] / draws, targets[40:60].mean() / draws
    if mode == "even":
        assert abs(last - window / length) < 0.02 and abs(middle - window / length) < 0.02
    else:
        assert last < 0.03 and middle > 0.1
    assert window_end(7, window, mode, rng) == 7  # short sequences are used whole
