import math

import pytest

from recsys_jax.evaluation.text_metrics import bleu, rouge, text_metrics


def test_bleu_hand_computed():
    # hyp "the cat sat on the mat" vs ref "the cat is on the mat": 1-gram 5/6, 2-gram 3/5,
    # equal lengths (BP 1) -> BLEU-2 = sqrt(5/6 * 3/5) = sqrt(1/2).
    assert bleu(["the cat is on the mat"], ["the cat sat on the mat"], order=2) == pytest.approx(
        100 * math.sqrt(0.5), abs=1e-6
    )
    assert bleu(["a b c d"], ["a b c d"], order=4) == pytest.approx(100.0)


def test_bleu_is_case_and_space_insensitive_and_counts_empty_outputs():
    assert bleu(["The  Cat is here"], ["the cat is HERE"], order=4) == pytest.approx(100.0)
    # Two cases, one generation empty: the corpus statistics still include it (brevity).
    both = bleu(["a b c d", "e f g h"], ["a b c d", ""], order=2)
    assert 0 < both < 100


def test_rouge_hand_computed_and_averaged():
    r = rouge(["the cat is on the mat", "x y"], ["the cat sat on the mat", ""])
    # case 1: R1 F = 5/6, R2 F = 3/5, RL = 5/6; case 2 (empty output): 0.
    assert r["ROUGE-1"] == pytest.approx(100 * (5 / 6) / 2)
    assert r["ROUGE-2"] == pytest.approx(100 * (3 / 5) / 2)
    assert r["ROUGE-L"] == pytest.approx(100 * (5 / 6) / 2)


def test_text_metrics_reports_empty_generations_and_rejects_mismatch():
    m = text_metrics(["a b", "c d"], ["a b", " "], bleu_order=2)
    assert m["num_cases"] == 2 and m["num_empty"] == 1 and "BLEU-2" in m
    with pytest.raises(ValueError, match="2 generations for 1 references"):
        bleu(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="no text cases"):
        rouge([], [])
