"""Tests for selfens_pl.scoring.metrics on hand-made cases."""

import math

import pytest
import torch
from torchmetrics.text import SQuAD

from selfens_pl.scoring.metrics import LemmaMatchAccuracy, SquadScores, is_match, normalize_lemmas


# ---------------------------------------------------------------- normalize_lemmas
def test_normalize_lowercases_lemmatises_and_drops_punct_space():
    assert normalize_lemmas("The  Cats RAN home!\n") == ["the", "cat", "run", "home"]


def test_normalize_empty_and_punct_only():
    assert normalize_lemmas("") == []
    assert normalize_lemmas(" ?! ... ") == []


# ---------------------------------------------------------------- is_match
def test_multiword_answer_contiguous_inside_prediction():
    assert is_match("President Barack Obama was elected in 2008.", ["Barack Obama"])


def test_non_contiguous_fails():
    assert not is_match("Barack the Obama", ["Barack Obama"])


def test_reversed_order_fails():
    assert not is_match("Obama Barack", ["Barack Obama"])


def test_no_partial_token_match():
    # "cat" must match whole lemmas, not substrings like "catalog".
    assert not is_match("a catalog", ["cat"])


def test_any_alias_counts():
    assert is_match("It was JFK.", ["John F. Kennedy", "JFK"])
    assert not is_match("It was Nixon.", ["John F. Kennedy", "JFK"])


def test_lemma_variants_plural_and_past_tense():
    # Lookup table maps cats->cat and ran->run (checked against spacy-lookups-data).
    assert is_match("There were many cats", ["cat"])
    assert is_match("he ran fast", ["run"])
    assert is_match("mice", ["mouse"])


def test_case_and_punctuation_insensitive():
    assert is_match("barack obama!!!", ["BARACK OBAMA"])
    assert is_match("Paris, France.", ["paris france"])


def test_bidirectional():
    assert not is_match("Obama", ["Barack Obama"])
    assert is_match("Obama", ["Barack Obama"], bidirectional=True)
    # Bidirectional still requires contiguity / overlap.
    assert not is_match("Clinton", ["Barack Obama"], bidirectional=True)


def test_empty_prediction_never_correct():
    assert not is_match("", ["Barack Obama"])
    assert not is_match("   ...  ", ["Barack Obama"], bidirectional=True)


def test_empty_gold_alias_skipped():
    # "!!" normalises to nothing; it must not match everything.
    assert not is_match("anything", ["!!"])
    assert is_match("a dog", ["!!", "dog"])


def test_empty_answers_raises():
    with pytest.raises(RuntimeError):
        is_match("Obama", [])


# ---------------------------------------------------------------- LemmaMatchAccuracy
def test_accuracy_accumulates_across_updates():
    m = LemmaMatchAccuracy()
    assert m.update(["Barack Obama", "Clinton"], [["Barack Obama"], ["Bush"]]) is None
    m.update(["cats", "Obama"], [["cat"], ["Barack Obama"]])
    assert m.total.item() == 4
    assert m.correct.item() == 2
    assert m.compute().item() == pytest.approx(0.5)
    assert m.compute().dtype.is_floating_point


def test_accuracy_bidirectional_option_and_match():
    m = LemmaMatchAccuracy(bidirectional=True)
    assert m.match("Obama", ["Barack Obama"])
    assert not LemmaMatchAccuracy().match("Obama", ["Barack Obama"])
    m.update(["Obama"], [["Barack Obama"]])
    assert m.compute().item() == pytest.approx(1.0)


def test_accuracy_length_mismatch_raises():
    with pytest.raises(RuntimeError):
        LemmaMatchAccuracy().update(["a", "b"], [["a"]])


@pytest.mark.filterwarnings("ignore:The ``compute`` method:UserWarning")
def test_accuracy_empty_is_nan_and_reset():
    m = LemmaMatchAccuracy()
    assert math.isnan(m.compute().item())
    m.update(["x"], [["x"]])
    m.reset()
    assert m.total.item() == 0


# ---------------------------------------------------------------- SquadScores
def _reference_squad(preds, answers):
    ref = SQuAD()
    p = [{"prediction_text": t, "id": str(i)} for i, t in enumerate(preds)]
    g = [{"answers": {"answer_start": [0] * len(a), "text": a}, "id": str(i)} for i, a in enumerate(answers)]
    return ref(p, g)


def test_squad_known_values():
    m = SquadScores()
    m.update(["The Eiffel Tower", "blue cat"], [["Eiffel Tower"], ["red cat", "green dog"]])
    out = m.compute()
    # Case 1: EM after article removal -> EM 1, F1 1. Case 2: EM 0, F1 0.5.
    assert out["exact_match"].item() == pytest.approx(50.0)
    assert out["f1"].item() == pytest.approx(75.0)


def test_squad_matches_torchmetrics_reference_across_updates():
    preds = ["1976", "in Paris, France", "a big red apple", "nothing", "Barack Obama"]
    answers = [["1976"], ["Paris"], ["red apple", "an apple"], ["something"], ["Obama", "Barack Hussein Obama"]]
    m = SquadScores()
    m.update(preds[:2], answers[:2])
    m.update(preds[2:], answers[2:])
    out = m.compute()
    ref = _reference_squad(preds, answers)
    assert out["exact_match"].item() == pytest.approx(ref["exact_match"].item())
    assert out["f1"].item() == pytest.approx(ref["f1"].item())
    assert 0.0 < out["f1"].item() < 100.0


@pytest.mark.filterwarnings("ignore:The ``compute`` method:UserWarning")
def test_squad_errors_and_empty():
    with pytest.raises(RuntimeError):
        SquadScores().update(["a"], [["a"], ["b"]])
    with pytest.raises(RuntimeError):
        SquadScores().update(["a"], [[]])
    out = SquadScores().compute()
    assert math.isnan(out["exact_match"].item()) and math.isnan(out["f1"].item())
    assert isinstance(out["f1"], torch.Tensor)
