import pytest

from recsys_jax.prompts.families import TEMPLATE_GROUPS as FAMILIES
from recsys_jax.prompts.templates import (
    EVALUATED_SEEN,
    TEMPLATES,
    UNSEEN,
    family_templates,
    get_template,
)

COUNTS = {"rating": 10, "sequential": 13, "explanation": 12, "review": 4, "direct": 8}


def test_template_ids_and_counts_follow_p5_structure():
    for family, n in COUNTS.items():
        prefix = [k for k, v in FAMILIES.items() if v == family][0]
        ids = sorted(
            (t.id for t in TEMPLATES.values() if t.family == family),
            key=lambda s: int(s.split("-")[1]),
        )
        assert ids == [f"{prefix}-{k}" for k in range(1, n + 1)]


def test_unseen_templates_are_held_out_of_training():
    assert UNSEEN == {"1-10", "2-13", "3-12", "4-4", "5-8"}
    for family in COUNTS:
        seen = family_templates(family, seen=True)
        unseen = family_templates(family, seen=False)
        assert len(unseen) == 1 and unseen[0].id in UNSEEN
        assert not {t.id for t in seen} & UNSEEN
        assert len(seen) == COUNTS[family] - 1


def test_evaluated_seen_templates_are_seen():
    for family, ids in EVALUATED_SEEN.items():
        for tid in ids:
            assert tid not in UNSEEN and get_template(tid).family == family


def test_slots_match_their_answers():
    for t in TEMPLATES.values():
        if t.family in ("sequential", "direct"):
            assert "history" in t.slots
        if t.answer == "yes_no" and t.family != "rating":
            assert "item" in t.slots
        if t.id in ("2-7", "2-8", "2-9", "2-10", "5-5", "5-6", "5-7", "5-8"):
            assert "candidates" in t.slots and t.answer == "item"
        if t.family == "review":
            assert "review" in t.slots
    assert {"feature"} <= get_template("3-9").slots and "feature" not in get_template("3-3").slots


def test_unknown_ids_and_families_are_clear_errors():
    with pytest.raises(ValueError, match="unknown prompt id"):
        get_template("9-9")
    with pytest.raises(ValueError, match="unknown task family"):
        family_templates("shopping")
