"""The learned chooser: its features on a hand-made group, its file, cross-validation by fact, and the head."""

from __future__ import annotations

import json
import math

import pytest

from selfens_pl.errors import UserError
from selfens_pl.heads import RerankHead
from selfens_pl.scoring.chooser import (FEATURES, Chooser, candidate_features, fit_chooser, fold_choosers,
                                        fold_of)
from selfens_pl.sweep.plan import plan_for


def _feature(rows, name):
    return [row[FEATURES.index(name)] for row in rows]


def test_features_of_a_hand_made_group():
    # K = 2 paraphrases x M = 2 blocks, block-major: members (p0 b0), (p1 b0), (p0 b1), (p1 b1)
    predictions = ["Paris", "Lyon", "Paris", "paris"]
    cands = ["Paris", "Lyon"]
    table = [[-1.0, -3.0], [-2.0, -0.5], [-0.5, -4.0], [-1.5, -2.0]]
    rows = candidate_features(predictions, cands, table, [2, 3], k=2, demo_answers=["Lyon"])
    assert len(rows) == 2 and all(len(r) == len(FEATURES) for r in rows)
    assert _feature(rows, "support_members") == [0.75, 0.25]  # "paris" agrees with "Paris" under the lemma rule
    assert _feature(rows, "support_paraphrases") == [1.0, 0.5]  # Paris: p0 (both blocks) and p1 (block 1)
    assert _feature(rows, "support_blocks") == [1.0, 0.5]  # Lyon only in block 0
    assert _feature(rows, "from_origin") == [1.0, 0.0]
    mixture = math.log((math.exp(-1) + math.exp(-2) + math.exp(-0.5) + math.exp(-1.5)) / 4)
    assert _feature(rows, "mixture")[0] == pytest.approx(mixture)
    assert _feature(rows, "max") == [-0.5, -0.5]
    assert _feature(rows, "mean") == [pytest.approx(-1.25), pytest.approx(-2.375)]
    assert _feature(rows, "mean_token") == [pytest.approx(-1.25 / 2), pytest.approx(-2.375 / 3)]
    assert _feature(rows, "origin_score") == [-1.0, -3.0]
    assert _feature(rows, "mixture_margin")[0] == pytest.approx(mixture - _feature(rows, "mixture")[1])
    assert _feature(rows, "mean_rank") == [0.25, 0.75]  # Paris first under 3 of 4 members
    assert _feature(rows, "first_rank_share") == [0.75, 0.25]
    assert _feature(rows, "tokens") == [2.0, 3.0]
    assert _feature(rows, "demo_answer") == [0.0, 1.0]


def test_features_refuse_a_table_that_does_not_fit():
    with pytest.raises(RuntimeError, match="do not fit"):
        candidate_features(["a", "b", "c"], ["a"], [[-1.0]] * 3, [1], k=2)


def test_a_chooser_file_round_trips(tmp_path):
    chooser = Chooser([0.5 * i for i in range(len(FEATURES))], -0.25, [0.1] * len(FEATURES),
                      [2.0] * len(FEATURES), FEATURES, trained_on=7)
    path = chooser.save(tmp_path / "sub" / "chooser.json")
    loaded = Chooser.load(path)
    assert loaded == chooser
    feats = [[float(i + j) for i in range(len(FEATURES))] for j in range(3)]
    assert loaded.scores(feats) == chooser.scores(feats)


def test_a_file_that_is_not_a_chooser_is_one_user_error(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"weights": [1.0]}))
    with pytest.raises(UserError, match="not a chooser file"):
        Chooser.load(bad)
    bad.write_text("{")
    with pytest.raises(UserError, match="invalid JSON"):
        Chooser.load(bad)


def _toy(n: int):
    """Facts whose right candidate is the one with the most support: a chooser must learn that."""
    ids, groups, labels = [], [], []
    for i in range(n):
        right = i % 3
        feats = [[1.0 if c == right else 0.25] + [0.0] * (len(FEATURES) - 1) for c in range(3)]
        ids.append(f"fact{i}")
        groups.append(feats)
        labels.append([c == right for c in range(3)])
    return ids, groups, labels


def test_fit_learns_what_predicts_the_right_candidate():
    ids, groups, labels = _toy(30)
    chooser = fit_chooser(groups, labels)
    assert all(labels[g][chooser.choose(groups[g])] for g in range(len(ids)))
    assert chooser.trained_on == 30


def test_fit_needs_right_and_wrong_candidates():
    with pytest.raises(UserError, match="both right and wrong"):
        fit_chooser([[[0.0] * len(FEATURES)]], [[False]])


def test_each_fold_chooser_never_saw_its_folds_facts(monkeypatch):
    ids, groups, labels = _toy(40)
    seen = []
    import selfens_pl.scoring.chooser as module

    real = module.fit_chooser

    def spy(train_groups, train_labels, *args, **kwargs):
        seen.append({id(g) for g in train_groups})
        return real(train_groups, train_labels, *args, **kwargs)

    monkeypatch.setattr(module, "fit_chooser", spy)
    choosers = fold_choosers(ids, groups, labels, folds=4)
    assert sorted(choosers) == [0, 1, 2, 3] and len(seen) == 4
    for f, trained in enumerate(seen):
        own = {id(groups[g]) for g in range(len(ids)) if fold_of(ids[g], 4) == f}
        assert own and not own & trained
        assert len(trained) + len(own) == len(ids)


def test_folds_depend_on_the_id_only():
    assert [fold_of(f"x{i}", 5) for i in range(20)] == [fold_of(f"x{i}", 5) for i in range(20)]
    assert len({fold_of(f"x{i}", 5) for i in range(50)}) == 5
    with pytest.raises(UserError, match="chooser_folds"):
        fold_choosers(["a"], [[]], [[]], folds=1)


def test_the_learned_head_needs_a_chooser_outside_the_sweep(tmp_path):
    head = RerankHead(rule="learned")
    assert head.learns_from_facts and head.label == "rerank_learned_cv"
    with pytest.raises(UserError, match="init_args.chooser"):
        head.generate(None, None, [{"id": "a", "paraphrases": ["q"], "answers": []}])
    with pytest.raises(UserError, match="goes with rule: learned"):
        RerankHead(rule="mixture", chooser=str(tmp_path / "c.json"))
    path = Chooser([0.0] * len(FEATURES), 0.0, [0.0] * len(FEATURES), [1.0] * len(FEATURES)).save(
        tmp_path / "c.json")
    loaded = RerankHead(rule="learned", chooser=str(path))
    assert not loaded.learns_from_facts and loaded.label == "rerank_learned" and plan_for(loaded).how == "derived"
    assert plan_for(head).cross_validated and not plan_for(loaded).cross_validated


def mixture_chooser(tmp_path) -> str:
    """A chooser that scores by the mixture feature alone: it must pick what ``rule: mixture`` picks."""
    weights = [1.0 if name == "mixture" else 0.0 for name in FEATURES]
    return str(Chooser(weights, 0.0, [0.0] * len(FEATURES), [1.0] * len(FEATURES)).save(tmp_path / "mix.json"))


def test_a_mixture_chooser_answers_as_the_mixture_rule_batched_and_alone(tiny_lm, template, groups, tmp_path):
    data = [dict(g, paraphrases=g["paraphrases"][:k]) for g, k in zip(groups, [3, 1, 2])]
    prompts = tiny_lm.prompts(template)
    learned = RerankHead(rule="learned", chooser=mixture_chooser(tmp_path))
    got = learned.generate(tiny_lm.decoder, prompts, data)
    want = RerankHead("mixture").generate(tiny_lm.decoder, prompts, data)
    assert [r["generation"] for r in got] == [r["generation"] for r in want]
    assert [r["method"] for r in got] == ["rerank_learned"] * 3
    alone = [learned.generate(tiny_lm.decoder, prompts, [g])[0] for g in data]
    assert [r["candidates"] for r in got] == [r["candidates"] for r in alone]


def test_a_learned_head_without_a_chooser_refuses_to_pick_answers_already_decoded():
    """The sweep derives a cascade's ensemble by its decide(): a learned ensemble without a file is one user error
    (only a plain RerankHead(rule=learned) is cross-validated), never a crash on a missing model."""
    from selfens_pl.engine.decoding import Generation

    gens = [Generation([5, 6], " Paris", [-0.5, -0.1]), Generation([7], " Lyon", [-0.9])]
    group = {"id": "g", "paraphrases": ["q1", "q2"], "answers": ["Paris"]}
    with pytest.raises(UserError, match="init_args.chooser"):
        RerankHead(rule="learned").decide(group, gens, lambda cands: [[-1.0] * len(cands)] * 2)
