"""Demonstration answers as candidates: ``RerankHead(demo_answers=True)`` also rescores the answers of the
demonstrations a group is asked with (its extra few-shot blocks), under every member, from the same encoding.

Checked on the tiny real model: without extra blocks the head writes the records of the head without the option;
each demonstration's answer is scored as a plain forward of the member's whole prompt + its tokens says; batched
equals alone; decide() over a pass is generate; the learned chooser's two extra features on a hand-made group; the
flag checks; and the sweep: every run with demonstration answers (the cross-validated chooser included) is what
the head answers on the cut groups itself.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_demos import with_blocks
from test_sweep_short_groups import FIXTURES, direct, uneven_file  # noqa: F401  (fixtures)
from test_sweep_wider import sweep_uneven
from test_wider_candidates import assert_records_equal, table_of

from selfens_pl.commands.report import load_run
from selfens_pl.data.demos import cut_blocks
from selfens_pl.engine.decoding import GreedyDecoder
from selfens_pl.errors import InternalError, UserError
from selfens_pl.heads import CascadeHead, RerankHead
from selfens_pl.engine.members import answer_continuation, demo_answers, demo_candidates, encode_members
from selfens_pl.heads.rerank import rerank_pass
from selfens_pl.jsonl import read_jsonl
from selfens_pl.scoring.chooser import DEMO_FEATURES, FEATURES, Chooser, candidate_features
from selfens_pl.scoring.rescoring import DEMO_MEMBER, candidates


@pytest.fixture(scope="module")
def newline(tiny_lm) -> GreedyDecoder:
    """Answers that stop at a newline, as the shipped configs' do."""
    return GreedyDecoder(tiny_lm.lm, tiny_lm.tokenizer, max_new_tokens=6, stop="\n", compile=False)


def demo_chooser(tmp_path) -> str:
    weights = [0.5, 0.2, 0.3, 0.1, 1.0, 0.4, 0.2, 0.1, 0.3, 0.2, -0.5, 0.3, -0.1, -0.4, 0.8, 0.6]
    assert len(weights) == len(DEMO_FEATURES)
    return str(Chooser(weights, 0.0, [0.0] * len(DEMO_FEATURES), [1.0] * len(DEMO_FEATURES), DEMO_FEATURES).save(
        tmp_path / "demo_chooser.json"))


def test_demo_candidates_are_the_extra_blocks_answers_in_order_each_once():
    group = {"id": "g", "paraphrases": ["q?"], "blocks": [
        [{"question": "a?", "answer": " Lima "}, {"question": "b?", "answer": "Paris"}],
        [{"question": "c?", "answer": "Lima"}, {"question": "d?", "answer": ""}, {"question": "e?", "answer": "Rome"}]]}
    assert demo_answers(group) == [" Lima ", "Paris", "Lima", "", "Rome"]
    got = demo_candidates(group, lambda p: [len(p)])
    assert got == [("Lima", [4]), ("Paris", [5]), ("Rome", [4])]
    assert demo_candidates({"id": "g", "paraphrases": ["q?"]}, lambda p: [0]) == []  # M = 1: none
    # after the members' answers and alternatives, each only when not already there, as DEMO_MEMBER
    cands = candidates(["Paris", ""], [[1], [2]], demos=got)
    assert [(c.prediction, c.member, c.support) for c in cands] == \
        [("Paris", 0, 1), ("Lima", DEMO_MEMBER, 0), ("Rome", DEMO_MEMBER, 0)]


def test_without_extra_blocks_the_head_is_the_head_without_demo_answers(tiny_lm, template, groups, newline):
    prompts = tiny_lm.prompts(template)
    for dec in (tiny_lm.decoder, newline):
        for rule in ("mixture", "vote"):
            got = RerankHead(rule, demo_answers=True).generate(dec, prompts, groups)
            want = RerankHead(rule).generate(dec, prompts, groups)
            assert [r.pop("method") for r in got] == [f"rerank_{rule}_demos"] * len(groups)
            assert_records_equal(got, [{k: v for k, v in r.items() if k != "method"} for r in want])


@pytest.mark.parametrize("stop", ["\n", None], ids=["newline", "eos"])
def test_each_demo_answer_is_scored_as_a_plain_forward_says(stop, tiny_lm, template, groups):
    """A demonstration's answer is `` {answer}`` + the stop string (or EOS), the tokenizer's split; its score under a
    member is the sum of log_softmax of a plain forward of that member's whole prompt + those tokens (no cache, no
    prefix sharing); the members' own candidates keep their scores."""
    dec = GreedyDecoder(tiny_lm.lm, tiny_lm.tokenizer, max_new_tokens=6, stop=stop, compile=False)
    prompts, data = tiny_lm.prompts(template), with_blocks(groups, m=3)
    scored = rerank_pass(dec, prompts, data, demo_answers=True)
    items, _, _ = encode_members(dec, prompts, data)
    plain = rerank_pass(dec, prompts, data)
    checked = 0
    for g, group in enumerate(data):
        shown = {p: t for p, t in demo_candidates(group, lambda a: answer_continuation(dec, a))}
        assert len(shown) >= 2
        demos = [c for c in scored.candidates[g] if c.member == DEMO_MEMBER]
        assert {c.prediction for c in demos} == set(shown) - {c.prediction for c in plain.candidates[g]}
        assert [c.prediction for c in scored.candidates[g][:len(plain.candidates[g])]] == \
            [c.prediction for c in plain.candidates[g]]
        for c in demos:
            text = tiny_lm.tokenizer.decode(c.tokens, skip_special_tokens=True)
            assert text == f" {c.prediction}" + ("\n" if stop else "")
            if stop is None:
                assert c.tokens[-1] in dec.eos_ids
        for m, (_, member_text, block) in enumerate(items[g]):
            ids = prompts.for_block(group, block).prompt_ids(member_text)
            for i, c in enumerate(scored.candidates[g]):
                with torch.inference_mode():
                    logits = tiny_lm.lm(input_ids=torch.tensor([ids + c.tokens[:-1]])).logits[0, len(ids) - 1:]
                want = logits.float().log_softmax(-1).gather(1, torch.tensor(c.tokens)[:, None]).sum().item()
                assert scored.tables[g][m][i] == pytest.approx(want, abs=5e-4)
                checked += c.member == DEMO_MEMBER
    assert checked > 0


def test_batched_equals_each_group_alone_and_decide_over_a_pass_is_generate(tiny_lm, template, groups, newline,
                                                                             tmp_path):
    data = with_blocks([dict(g, paraphrases=g["paraphrases"][:k]) for g, k in zip(groups, [3, 1, 2])], m=3)
    prompts = tiny_lm.prompts(template)
    heads = (RerankHead(demo_answers=True), RerankHead("max", demo_answers=True, first_tokens=2),
             RerankHead("learned", chooser=demo_chooser(tmp_path), demo_answers=True))
    for head in heads:
        for dec in (tiny_lm.decoder, newline):
            batched = head.generate(dec, prompts, data)
            assert_records_equal(batched, [head.generate(dec, prompts, [g])[0] for g in data])
            assert any(c["member"] == DEMO_MEMBER for r in batched for c in r["candidates"])
            if head.first_tokens == 1:
                scored = rerank_pass(dec, prompts, data, demo_answers=True)
                decided = [head.decide(group, scored.gens[g], table_of(scored.candidates[g], scored.tables[g]),
                                       demos=demo_candidates(group, lambda a: answer_continuation(dec, a)))
                           for g, group in enumerate(data)]
                assert_records_equal(decided, batched)


def test_a_chosen_demo_answer_is_the_record(tiny_lm, template, groups, tmp_path):
    """A chooser that only trusts the demonstrations picks a demonstration's answer: the record's prediction and
    generation are its text, its mean_prob None (no member decoded it), its candidate the demonstration's."""
    weights = [0.0] * (len(DEMO_FEATURES) - 1) + [5.0]  # demo_nearest only: the first demonstration's answer
    path = Chooser(weights, 0.0, [0.0] * len(DEMO_FEATURES), [1.0] * len(DEMO_FEATURES), DEMO_FEATURES).save(
        tmp_path / "nearest.json")
    data = with_blocks(groups, m=2)
    records = RerankHead("learned", chooser=str(path), demo_answers=True).generate(tiny_lm.decoder,
                                                                                   tiny_lm.prompts(template), data)
    for rec, group in zip(records, data):
        first = demo_answers(group)[0].strip()
        assert rec["prediction"] == first and rec["generation"] == f" {first}" and rec["mean_prob"] is None
        chosen = max(rec["candidates"], key=lambda c: c["score"])
        assert chosen["prediction"] == first


def test_the_choosers_demo_features_on_a_hand_made_group():
    """2 paraphrases x 2 blocks; candidates "paris" (two members), "lyon" (a demonstration's, the 3rd of 4),
    "nice" (the 1st and 4th demonstrations')."""
    table = [[-1.0, -3.0, -2.0], [-2.0, -2.5, -4.0], [-0.5, -4.0, -1.0], [-3.0, -1.0, -2.0]]
    demos = ["nice", "rome", "lyon", "nice"]
    base = candidate_features(["paris", "x", "paris", "y"], ["paris", "lyon", "nice"], table, [2, 2, 3], 2, demos)
    full = candidate_features(["paris", "x", "paris", "y"], ["paris", "lyon", "nice"], table, [2, 2, 3], 2, demos,
                              demo_features=True)
    assert [len(r) for r in base] == [len(FEATURES)] * 3 and [len(r) for r in full] == [len(DEMO_FEATURES)] * 3
    assert [r[:len(FEATURES)] for r in full] == base  # the old features unchanged
    assert [r[len(FEATURES):] for r in full] == [[0.0, 0.0], [0.25, 0.5], [0.5, 1.0]]
    assert [r[FEATURES.index("demo_answer")] for r in full] == [0.0, 1.0, 1.0]
    assert full[2][FEATURES.index("support_members")] == 0.0


def test_labels_and_flag_checks(tiny_lm, template, groups, tmp_path):
    assert RerankHead(demo_answers=True).label == "rerank_mixture_demos"
    assert RerankHead("learned", first_tokens=3, demo_answers=True).label == "rerank_learned_top3_demos_cv"
    assert RerankHead(demo_answers=True).decoded_rows(4) == 4  # scored, not decoded
    with pytest.raises(UserError, match=r"--model\.head\.init_args\.demo_answers must be true or false"):
        RerankHead(demo_answers="yes")
    with pytest.raises(UserError, match="a cascade escalates to a RerankHead without demo_answers"):
        CascadeHead(ensemble=RerankHead(demo_answers=True))
    plain = str(Chooser([0.1] * len(FEATURES), 0.0, [0.0] * len(FEATURES), [1.0] * len(FEATURES)).save(
        tmp_path / "plain.json"))
    with pytest.raises(UserError, match=r"not those of a head with demo_answers.*--demo_answers true"):
        RerankHead("learned", chooser=plain, demo_answers=True)
    with pytest.raises(UserError, match="not those of a head without demo_answers"):
        RerankHead("learned", chooser=demo_chooser(tmp_path))
    assert RerankHead("learned", chooser=demo_chooser(tmp_path), demo_answers=True).model.features == DEMO_FEATURES
    # decide() without the demonstrations' answers would rescore the members' only: refused (and the reverse)
    gens = rerank_pass(tiny_lm.decoder, tiny_lm.prompts(template), groups[:1]).gens[0]
    scores = lambda cands: [[0.0] * len(cands)] * len(gens)  # noqa: E731
    with pytest.raises(InternalError, match="demo_answers=True but demonstration answers were not given"):
        RerankHead(demo_answers=True).decide(groups[0], gens, scores)
    with pytest.raises(InternalError, match="demo_answers=False but demonstration answers were given"):
        RerankHead().decide(groups[0], gens, scores, demos=[])


HEADS = [{"class_path": "selfens_pl.heads.RerankHead", "init_args": {"rule": "mixture", "demo_answers": True}},
         {"class_path": "selfens_pl.heads.RerankHead", "init_args": {"rule": "vote", "demo_answers": True,
                                                                      "first_tokens": 2}},
         {"class_path": "selfens_pl.heads.RerankHead", "init_args": {"rule": "mixture"}}]


@pytest.fixture(scope="module")
def with_demos(tiny_model_dir, uneven_file, tmp_path_factory):  # noqa: F811
    return sweep_uneven(tiny_model_dir, uneven_file, tmp_path_factory.mktemp("sweep_demos") / "out", HEADS, "1,3")


def candidates_of(records: list[dict]) -> list[tuple]:
    return sorted((r["id"], r["generation"], tuple((c["prediction"], c["member"], c["support"], round(c["score"], 2))
                                                   for c in r["candidates"])) for r in records)


CHECKS = [("rerank_mixture_demos", lambda: RerankHead(demo_answers=True)),
          ("rerank_vote_top2_demos", lambda: RerankHead("vote", first_tokens=2, demo_answers=True)),
          ("rerank_mixture", RerankHead)]


@pytest.mark.parametrize("k,m", [(3, 2), (1, 2), (3, 1)])
@pytest.mark.parametrize("label,make", CHECKS, ids=[c[0] for c in CHECKS])
def test_every_sweep_run_with_demo_answers_is_what_the_head_answers(
        label, make, k, m, with_demos, direct):  # noqa: F811
    lm, prompts, groups = direct
    cut = [cut_blocks(dict(g, paraphrases=g["paraphrases"][:k]), m) for g in groups]
    got = load_run(with_demos / "runs" / f"{label}_k{k}_m{m}").records
    assert candidates_of(got) == candidates_of(make().generate(lm.decoder, prompts, cut))
    shown = any(c["member"] == DEMO_MEMBER for r in got for c in r["candidates"])
    assert shown == (m > 1 and make().demo_answers)


def test_the_engine_scores_the_demo_answers_once_and_the_report_has_their_oracle(with_demos):
    settings = json.loads((with_demos / "facts.settings.json").read_text())
    assert settings["demo_answers"] is True and settings["first_tokens"] == 2
    for row in read_jsonl(with_demos / "facts.jsonl"):
        columns = {tuple(c["tokens"]) for c in row["candidates"]}
        assert row["demos"] and all(tuple(tokens) in columns for _, tokens in row["demos"])
        assert len(row["table"]) == len(row["members"]) and all(len(r) == len(columns) for r in row["table"])
    grid = json.loads((with_demos / "sweep.json").read_text())["accuracy"]
    assert "oracle (any candidate, + demo answers)" in grid and "oracle (any candidate, top2 + demo answers)" in grid
    assert "| oracle (any candidate, + demo answers) |" in (with_demos / "sweep.md").read_text()


def test_the_cross_validated_chooser_with_demo_answers_is_the_head_with_its_folds_file(
        with_demos, direct, tmp_path):  # noqa: F811
    """As tests/test_sweep_wider.py's check: each fact's record is what ``RerankHead("learned", chooser=<the file
    of the other folds>, demo_answers=True)`` answers on it alone ("right" is a rule of the answer's length)."""
    from selfens_pl.scoring.chooser import fold_choosers, fold_of
    from selfens_pl.sweep.derive import Deriver
    from selfens_pl.sweep.engine import Grid

    lm, prompts, groups = direct
    facts = {row["id"]: row for row in read_jsonl(with_demos / "facts.jsonl")}
    derive = Deriver(facts, groups, Grid((1, 3), (1, 2)), lambda p, answers: len(p) % 2 == 0)
    head = RerankHead("learned", demo_answers=True)
    data = derive.chooser_data(head, 3, 2)
    run = derive.cross_validated("rerank_learned_demos_cv", head, 3, 2, folds=2, data=data)
    ids, _, feats, labels, _ = data
    assert {len(row) for own in feats for row in own} == {len(DEMO_FEATURES)}
    files = {f: model.save(tmp_path / f"fold{f}.json")
             for f, model in fold_choosers(ids, feats, labels, 2, features=DEMO_FEATURES).items()}
    cut = {g["id"]: cut_blocks(dict(g, paraphrases=g["paraphrases"][:3]), 2) for g in groups}
    want = [RerankHead("learned", chooser=str(files[fold_of(r["id"], 2)]), demo_answers=True).generate(
        lm.decoder, prompts, [cut[r["id"]]])[0] for r in run.records]
    assert candidates_of(run.records) == candidates_of(want)
    assert run.extra["demo_answers"] is True


def test_predict_refuses_demo_answers_without_extra_blocks(tmp_path):
    """Before predict: demonstration answers with ``--data.demo_blocks 1`` would be the head without them."""
    from selfens_pl.data.datamodule import ParaphraseDataModule, demo_path
    from selfens_pl.lit.preflight import check_head_data

    pool = str(FIXTURES / "webqa_tiny.jsonl")
    with pytest.raises(UserError, match=r"demo_answers=true .* --data\.demo_blocks=1 asks with none"):
        check_head_data(RerankHead(demo_answers=True), ParaphraseDataModule(path=demo_path()))
    check_head_data(RerankHead(demo_answers=True), ParaphraseDataModule(path=demo_path(), demo_blocks=2,
                                                                         few_shot_pool=pool))
    check_head_data(RerankHead(), ParaphraseDataModule(path=demo_path()))
    check_head_data(CascadeHead(), ParaphraseDataModule(path=demo_path()))
