"""The chooser's rich features, its boosted-tree model (JSON trees, no pickle), its calibrated confidence, and that
cross-validation (calibration included) never fits on the facts it scores."""

from __future__ import annotations

import json
import math

import pytest

import selfens_pl.scoring.chooser as module
from selfens_pl.errors import UserError
from selfens_pl.heads import RerankHead
from selfens_pl.scoring.chooser import (DEMO_FEATURES, FEATURES, RICH_DEMO_FEATURES, RICH_FEATURES, Chooser,
                                        candidate_features, fit_chooser, fold_choosers, fold_of, rich_features)
from selfens_pl.scoring.chooser_eval import accuracy_at_coverage, cross_validated_choices
from selfens_pl.scoring.chooser_features import wh_word


@pytest.fixture(autouse=True)
def few_trees(monkeypatch):
    """Fewer, smaller trees: the same code path, a tenth of the time."""
    monkeypatch.setattr(module, "BOOSTING", dict(module.BOOSTING, max_iter=6, min_samples_leaf=5))


def _f(rows, name, names=RICH_DEMO_FEATURES):
    return [row[names.index(name)] for row in rows]


def test_rich_features_of_a_hand_made_group():
    # K = 1 x M = 3 members; candidates: two members' answers and a demonstration-only answer
    predictions = ["Barack Obama", "obama", "1961"]
    cands = ["Barack Obama", "1961", "Hawaii"]
    table = [[-1.0, -3.0, -2.0], [-2.0, -0.5, -4.0], [-0.5, -4.0, -3.0]]
    demos = ["Hawaii", "Barack Obama", "hawaii", "Kenya"]  # nearest first
    questions = ["where was obama born", "who was born in 1961 in hawaii", "where is honolulu", "where was he born"]
    rows = rich_features("Who was born in 1961?", predictions, cands, [True, True, False], table, [3, 2, 2], 1,
                         demos, demo_features=True, demo_questions=questions)
    assert len(rows) == 3 and all(len(r) == len(RICH_DEMO_FEATURES) for r in rows)
    standard = candidate_features(predictions, cands, table, [3, 2, 2], 1, demos, demo_features=True)
    assert [r[:len(FEATURES)] for r in rows] == [r[:len(FEATURES)] for r in standard]  # the standard set first
    assert _f(rows, "demo_share") == _f(standard, "demo_share", DEMO_FEATURES)
    assert _f(rows, "min") == [-2.0, -4.0, -4.0]
    # member ranks: m0 ranks [0, 2, 1], m1 [1, 0, 2], m2 [0, 2, 1]
    assert _f(rows, "best_rank") == [0.0, 0.0, 1.0] and _f(rows, "worst_rank") == [1.0, 2.0, 2.0]
    assert _f(rows, "top3_share") == [1.0, 1.0, 1.0] and _f(rows, "candidates") == [3.0] * 3
    mixtures = [math.log(sum(math.exp(table[j][i]) for j in range(3)) / 3) for i in range(3)]
    assert _f(rows, "mixture_gap") == pytest.approx([m - max(mixtures) for m in mixtures])
    assert _f(rows, "mixture_place") == [0.0, 1.0, 2.0]
    assert _f(rows, "produced") == [1.0, 1.0, 0.0]
    assert _f(rows, "q_who") == [1.0] * 3 and _f(rows, "q_other") == [0.0] * 3
    assert _f(rows, "capitalised") == [1.0, 0.0, 1.0] and _f(rows, "year") == [0.0, 1.0, 0.0]
    assert _f(rows, "who_capitalised") == [1.0, 0.0, 1.0] and _f(rows, "when_year") == [0.0] * 3
    assert _f(rows, "words") == [2.0, 1.0, 1.0]
    # demonstrations: Hawaii is the nearest (and the 3rd: lemma rule), Barack Obama the 2nd
    assert _f(rows, "nearest1_agree") == [0.0, 0.0, 1.0]
    assert _f(rows, "nearest3_agree") == [1.0, 0.0, 2.0] and _f(rows, "nearest10_agree") == [1.0, 0.0, 2.0]
    assert _f(rows, "nearest_is_first") == [0.0, 0.0, 1.0]
    # content words: {born, 1961} asked; {obama, born}, {born, 1961, hawaii}, {honolulu}, {he, born} shown
    assert _f(rows, "agree_overlap") == pytest.approx([2 / 3, 0.0, 1 / 3])  # Hawaii: demos 0 and 2, the best 1/3
    assert _f(rows, "nearest_overlap") == pytest.approx([1 / 3] * 3)
    without = rich_features("Who was born in 1961?", predictions, cands, [True, True, False], table, [3, 2, 2], 1,
                            demos)
    assert [r[:len(RICH_FEATURES)] for r in rows] == without


def test_the_question_word():
    assert [wh_word(q) for q in ("who is X?", "How many moons?", "how much is it", "what year?", "Paris is in",
                                 "in which country", "where did he go")] == \
        ["who", "how_many", "how_many", "what", "other", "which", "where"]


def _toy(n: int, width: int = len(RICH_FEATURES)):
    """Facts whose right candidate is the one whose 1st feature is high AND 2nd is low (an interaction)."""
    ids, groups, labels = [], [], []
    for i in range(n):
        right = i % 3
        feats = [[1.0 if c == right or c == (right + 1) % 3 else 0.0, 0.0 if c == right else 1.0,
                  float((i * 7 + c) % 5)] + [0.0] * (width - 3) for c in range(3)]
        ids.append(f"fact{i}")
        groups.append(feats)
        labels.append([c == right for c in range(3)])
    return ids, groups, labels


def test_a_boosted_chooser_scores_as_sklearn_and_its_file_loads_to_the_same_choices(tmp_path):
    ids, groups, labels = _toy(60)
    chooser = fit_chooser(groups, labels, features=RICH_FEATURES, model_type="boosting", calibrate=False)
    assert chooser.model_type == "boosting" and chooser.trees and chooser.calibration is None
    assert all(labels[g][chooser.choose(groups[g])] for g in range(len(ids)))
    # the JSON trees are the model: their sum is sklearn's decision function, candidate for candidate
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier

    x = np.array([row for feats in groups for row in feats])
    y = np.array([v for lab in labels for v in lab])
    model = HistGradientBoostingClassifier(**module.BOOSTING, early_stopping=False, random_state=0).fit(x, y)
    ours = [s for feats in groups for s in chooser.scores(feats)]
    assert ours == pytest.approx(list(model.decision_function(x)), abs=1e-9)
    path = chooser.save(tmp_path / "boosted.json")
    data = json.loads(path.read_text())
    assert data["format"] == module.TREES_FORMAT and "weights" not in data
    loaded = Chooser.load(path, features=None, demo_answers=False)
    assert loaded.features == RICH_FEATURES and loaded.trees == chooser.trees
    assert [loaded.scores(f) for f in groups] == [chooser.scores(f) for f in groups]


def test_a_damaged_tree_file_is_one_user_error(tmp_path):
    ids, groups, labels = _toy(30)
    path = fit_chooser(groups, labels, features=RICH_FEATURES, model_type="boosting", calibrate=False).save(
        tmp_path / "c.json")
    data = json.loads(path.read_text())
    data["trees"][0]["left"][0] = 10 ** 6
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="damaged chooser file"):
        Chooser.load(path, features=None, demo_answers=False)


def test_the_confidence_is_calibrated_on_held_out_folds_and_ranks_the_choices():
    ids, groups, labels = _toy(90)
    for g in range(0, 90, 4):  # a quarter of the facts have no right candidate: the confidence must see it
        groups[g] = [[0.5, 0.5, 0.0] + [0.0] * (len(RICH_FEATURES) - 3) for _ in range(3)]
        labels[g] = [False] * 3
    chooser = fit_chooser(groups, labels, features=RICH_FEATURES, model_type="logistic")
    assert chooser.calibration is not None and len(chooser.calibration) == 3
    conf = [chooser.confidence(chooser.scores(f)) for f in groups]
    assert all(0.0 < c < 1.0 for c in conf)
    right = [labels[g][chooser.choose(groups[g])] for g in range(90)]
    assert accuracy_at_coverage(right, conf, 0.5) > sum(right) / len(right)
    assert fit_chooser(*_toy(30)[1:], features=RICH_FEATURES).confidence([]) is None
    everything_right = [[True] * 3 for _ in range(30)]
    with pytest.raises(UserError, match="both right and wrong"):
        fit_chooser(_toy(30)[1], everything_right, features=RICH_FEATURES)


def test_cross_validation_and_its_calibration_never_fit_on_the_scored_fold(monkeypatch):
    ids, groups, labels = _toy(40, len(FEATURES))
    calls = []
    real = module._fit

    def spy(train_groups, *args):
        calls.append({id(g) for g in train_groups})
        return real(train_groups, *args)

    monkeypatch.setattr(module, "_fit", spy)
    fold_choosers(ids, groups, labels, folds=4, features=FEATURES)  # standard: logistic, calibrated
    per_fold = 1 + module.CALIBRATION_FOLDS  # the chooser, then its calibration folds
    assert len(calls) == 4 * per_fold
    for f in range(4):
        own = {id(groups[g]) for g in range(len(ids)) if fold_of(ids[g], 4) == f}
        assert own and all(not own & trained for trained in calls[f * per_fold:(f + 1) * per_fold])
    choices = cross_validated_choices(ids, groups, labels, 4, FEATURES, "logistic")
    assert len(choices.right) == 40 and all(c is None or 0 < c < 1 for c in choices.confidence)


def test_the_head_takes_its_files_feature_set(tmp_path):
    ids, groups, labels = _toy(30, len(RICH_DEMO_FEATURES))
    path = str(fit_chooser(groups, labels, features=RICH_DEMO_FEATURES, model_type="boosting").save(
        tmp_path / "rich.json"))
    head = RerankHead(rule="learned", demo_answers=True, chooser=path)
    assert head.features == RICH_DEMO_FEATURES and head.rich and head.label == "rerank_learned_rich_demos"
    assert RerankHead(rule="learned", demo_answers=True, chooser=path, chooser_features="rich").rich
    with pytest.raises(UserError, match="not those of a head with demo_answers"):
        RerankHead(rule="learned", demo_answers=True, chooser=path, chooser_features="standard")
    with pytest.raises(UserError, match="not those of a head without demo_answers"):
        RerankHead(rule="learned", chooser=path)
    with pytest.raises(UserError, match="goes with rule: learned"):
        RerankHead(rule="mixture", chooser_features="rich")
    cv = RerankHead(rule="learned", demo_answers=True, chooser_features="rich")
    assert cv.features == RICH_DEMO_FEATURES and cv.label == "rerank_learned_rich_demos_cv"
    shipped = RerankHead(rule="learned", demo_answers=True, chooser="configs/chooser_webqa_demos.json")
    assert shipped.features == DEMO_FEATURES and shipped.model.model_type == "logistic" and not shipped.rich
