import numpy as np
import pytest

from recsys_jax.prompts.builders import masked_length_bound
from recsys_jax.prompts.templates import TEMPLATES, family_templates


def test_sequential_prompt_has_history_entities_and_the_target_as_answer(toy):
    ds, splits, index, tok, factory = toy
    rng = np.random.default_rng(0)
    history, target = list(splits.train[0]), int(splits.valid_target[0])
    prompt = factory.sequence_prompt(TEMPLATES["2-3"], 0, history, target, rng)
    ex = factory.encode(prompt)
    assert len(ex.entity_spans) == len(history) + 1
    assert ex.target_spans == [ex.entity_spans[-1]]
    assert tok.decode(ex.ids[slice(*ex.target_spans[0])]) == index.spell(target)
    assert ex.task == "2-3"


def test_yes_no_and_candidate_prompts(toy):
    ds, splits, index, tok, factory = toy
    rng = np.random.default_rng(1)
    answers = set()
    for _ in range(20):
        p = factory.sequence_prompt(TEMPLATES["5-1"], 3, list(splits.train[3]), 7, rng)
        answers.add(p.answer)
        assert p.answer in ("yes", "no")
    assert answers == {"yes", "no"}
    p = factory.sequence_prompt(TEMPLATES["5-5"], 3, list(splits.train[3]), 7, rng)
    cands = p.items[len(splits.train[3]) : -1]
    assert 7 in cands and len(cands) == factory.train_candidates == len(set(cands))
    assert not (set(cands) - {7}) & factory.known_items[3]  # negatives are never user items


def test_evaluation_prompt_has_no_answer(toy):
    ds, splits, index, tok, factory = toy
    rng = np.random.default_rng(0)
    p = factory.sequence_prompt(TEMPLATES["5-4"], 0, list(splits.train[0]), None, rng, probe=5)
    assert p.answer is None and factory.encode(p).target_spans == []


def test_empty_history_is_a_clear_error(toy):
    ds, splits, index, tok, factory = toy
    with pytest.raises(ValueError, match="empty history"):
        factory.sequence_prompt(TEMPLATES["2-3"], 0, [], 1, np.random.default_rng(0))


def test_fit_history_keeps_most_recent_items_within_budget(toy):
    ds, splits, index, tok, factory = toy
    rng = np.random.default_rng(0)
    long_history = list(range(40))
    ex = factory.fit_history(
        lambda h, n: factory.sequence_prompt(TEMPLATES["2-3"], 0, h, 45, rng), long_history
    )
    assert masked_length_bound(ex) <= factory.cfg.max_length
    shown = [index.item_of(tok.decode(ex.ids[s:e])) for s, e in ex.entity_spans[:-1]]
    assert shown == long_history[-len(shown) :] and len(shown) < 40


def test_row_families(toy):
    ds, splits, index, tok, factory = toy
    rng = np.random.default_rng(0)
    inter = ds.interactions
    row = 0
    args = (
        int(inter.user[row]),
        int(inter.item[row]),
        float(inter.rating[row]),
        inter.review[row],
        inter.summary[row],
        rng,
    )
    star = factory.row_prompt(TEMPLATES["1-6"], *args)
    assert star.answer == str(int(inter.rating[row]))
    expl = factory.row_prompt(TEMPLATES["3-9"], *args)
    assert expl.answer == inter.review[row].split(". ")[0] + "."
    summ = factory.row_prompt(TEMPLATES["4-1"], *args)
    assert summ.answer == inter.summary[row]
    for family in ("rating", "explanation", "review"):
        for t in family_templates(family):
            ex = factory.encode(factory.row_prompt(t, *args))
            assert len(ex.target_spans) == 1
