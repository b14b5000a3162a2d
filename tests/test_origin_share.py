"""``origin_share``: the original question's share of a group's weight in LogitFusion, VoteHead and RerankHead.

Checked by hand on made-up logits, answers and score tables (each rule's weighted form; equal weights are the
unweighted rule), and on the tiny real model: equal weights (``share = 1 / K``) answer as the head without a share,
a share near 1 answers as origin (a rescoring rule: as the original's own scores rank the candidates), batched
equals alone, every swept run with a share is what the head answers on the cut groups itself, and the fine-tuning
loss fuses as the head predicts. Bad values are one error naming the flag.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_demos import with_blocks
from test_sweep import assert_run_is_the_head
from test_sweep_short_groups import direct, uneven_file  # noqa: F401  (fixtures)
from test_sweep_wider import sweep_uneven

from selfens_pl.commands import sweep
from selfens_pl.commands.report import load_run
from selfens_pl.data.datamodule import demo_path, load_groups
from selfens_pl.data.origin_share import (GENERATED_SHARE, check_origin_share, group_share, member_weights,
                                          share_weights)
from selfens_pl.data.prompts import PromptTokenizer
from selfens_pl.engine.decode_batches import Generation
from selfens_pl.engine.fusion import fuse_logits, rule_key, split_rule_key
from selfens_pl.errors import UserError
from selfens_pl.heads import LogitFusion, OriginHead, RerankHead, VoteHead
from selfens_pl.heads.rerank import rerank_pass
from selfens_pl.lit.training import answer_loss
from selfens_pl.scoring.agreement import vote, weighted_support
from selfens_pl.scoring.rescoring import best, combine
from selfens_pl.sweep.plan import plan_for


def test_member_weights_on_a_hand_made_group():
    group = {"paraphrases": ["q", "q1", "q2"], "blocks": [[{"question": "x", "answer": "y"}]]}
    assert member_weights(group, 0.5) == [1.5, 0.75, 0.75, 1.5, 0.75, 0.75]  # block-major, mean 1
    assert sum(member_weights(group, 0.2)) == pytest.approx(6.0)
    assert sum(member_weights(group, 0.2)[0::3]) / 6 == pytest.approx(0.2)  # the original's share
    assert member_weights(group, None) is None
    assert member_weights({"paraphrases": ["q"], "blocks": [[]]}, 0.5) is None  # nothing to share
    assert share_weights(4, 1, 0.25) == pytest.approx([1.0] * 4)  # 1 / K: every member equal


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.2, True, "half"])
def test_a_bad_share_is_one_error_naming_the_flag(bad):
    with pytest.raises(UserError, match=r"--model.head.init_args.origin_share=.*strictly between 0 and 1"):
        check_origin_share(bad)


def test_heads_refuse_a_share_they_cannot_weigh():
    for make in (lambda: LogitFusion("max", origin_share=0.5), lambda: LogitFusion("weighted_avg", origin_share=0.5),
                 lambda: LogitFusion("avg", calibration="question", origin_share=0.5)):
        with pytest.raises(UserError, match="origin_share=0.5 weighs the rows"):
            make()
    for make in (lambda: RerankHead("learned", origin_share=0.5), lambda: RerankHead(fused="avg", origin_share=0.5)):
        with pytest.raises(UserError, match="origin_share=0.5 weighs the members of a fixed rule"):
            make()
    assert check_origin_share(None) is None and check_origin_share(0.5) == 0.5 and check_origin_share("auto") == "auto"
    # the default ("auto") on a rule that weighs nothing is every member equal, named as before
    for head, name in ((LogitFusion("max"), "max"), (LogitFusion("weighted_avg"), "weighted_avg"),
                       (LogitFusion("avg", calibration="question"), "calibrated_avg"),
                       (RerankHead("learned"), "rerank_learned"), (RerankHead(fused="avg"), "rerank_mixture_avg"),
                       (LogitFusion("max", origin_share=None), "max")):
        assert head.origin_share is None and head.method == name


def test_labels_and_engine_rules():
    assert VoteHead(0.5).method == "vote_origin0.5" and VoteHead().method == "vote"
    assert VoteHead(None).method == "vote_equal" and VoteHead().origin_share == "auto"
    assert LogitFusion("prob_avg", origin_share=0.5).method == "prob_avg_origin0.5"
    assert plan_for(LogitFusion("avg", origin_share=0.5)).engine_rule == "avg@0.5" == rule_key("avg", 0.5)
    assert plan_for(LogitFusion("avg")).engine_rule == "avg@auto" and split_rule_key("avg@auto") == ("avg", "auto")
    assert plan_for(LogitFusion("avg", origin_share=None)).engine_rule == "avg"
    assert split_rule_key("avg@0.5") == ("avg", 0.5)
    assert LogitFusion("avg", origin_share=None).method == "avg_equal" and LogitFusion("avg").method == "avg"
    assert RerankHead("max", origin_share=0.25).method == "rerank_max_origin0.25"
    assert RerankHead("max", origin_share=None).method == "rerank_max_equal" and RerankHead().method == "rerank_mixture"


def test_auto_weighs_the_original_of_generated_paraphrases_only():
    written = {"paraphrases": ["q", "q1", "q2"]}
    generated = dict(written, paraphraser="smollm2-135m-instruct")
    assert GENERATED_SHARE == 0.9
    assert member_weights(generated, "auto") == member_weights(generated, 0.9) == pytest.approx([2.7, 0.15, 0.15])
    assert member_weights(written, "auto") is None and member_weights(generated, None) is None
    assert group_share(generated, "auto") == 0.9 and group_share(written, "auto") is None
    assert group_share(written, 0.3) == 0.3  # an explicit number holds for every group


def test_the_loader_keeps_which_groups_were_generated(tmp_path):
    path = tmp_path / "g.jsonl"
    rows = [{"id": "a", "paraphrases": ["q", "q1"], "answers": ["x"], "paraphraser": "smollm2-135m-instruct"},
            {"id": "b", "paraphrases": ["r", "r1"], "answers": ["y"]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a, b = load_groups(str(path))
    assert a["paraphraser"] == "smollm2-135m-instruct" and "paraphraser" not in b
    path.write_text(json.dumps(dict(rows[0], paraphraser=3)) + "\n")
    with pytest.raises(UserError, match=r"line 1: field 'paraphraser' must be a non-empty string, got 3"):
        load_groups(str(path))


def test_each_logit_rule_weighs_its_rows_as_written():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7)
    w = torch.tensor([[1.5, 0.75, 0.75], [2.0, 0.5, 0.5]])
    logp, p = logits.log_softmax(-1), logits.softmax(-1)
    wn = (w / w.sum(1, keepdim=True))[..., None]
    torch.testing.assert_close(fuse_logits(logits, "avg", w), (wn * logits).sum(1))
    torch.testing.assert_close(fuse_logits(logits, "prob_avg", w), (wn * p).sum(1).log())
    entropy = -(p * logp).sum(-1)
    a = (w * (-entropy).exp())
    a = (a / a.sum(1, keepdim=True))[..., None]
    torch.testing.assert_close(fuse_logits(logits, "entropy_weighted", w), (a * logp).sum(1))
    ones = torch.ones(2, 3)
    valid = torch.tensor([[True, True, False], [True, True, True]])
    for rule in ("avg", "prob_avg", "entropy_weighted"):  # equal weights: the rule; a padding row never counts
        torch.testing.assert_close(fuse_logits(logits, rule, ones, valid), fuse_logits(logits, rule, None, valid))
        odd = torch.tensor([[1.0, 1.0, 50.0], [1.0, 1.0, 1.0]])
        torch.testing.assert_close(fuse_logits(logits, rule, odd, valid)[0], fuse_logits(logits, rule, None, valid)[0])


def test_a_weighted_vote_lets_the_original_hold_against_a_split():
    answers, logprobs = ["Paris", "Lyon", "Lyon"], [[-1.0], [-0.5], [-0.5]]
    assert vote(answers, logprobs) == (1, 2)  # one vote each: Lyon
    assert vote(answers, logprobs, weights=[1.8, 0.6, 0.6]) == (0, 1.8)  # share 0.6: Paris
    assert weighted_support(answers, answers, [1.5, 0.75, 0.75]) == [1.5, 1.5, 1.5]  # share 0.5: a tie ...
    assert vote(answers, logprobs, weights=[1.5, 0.75, 0.75])[0] == 1  # ... to the surer answer
    gens = [Generation(token_ids=[1], text=" " + a, logprobs=lp) for a, lp in zip(answers, logprobs)]
    group = {"id": "g", "paraphrases": ["q0", "q1", "q2"], "answers": ["Paris"]}
    rec = VoteHead(0.6).decide(group, gens)
    assert (rec["prediction"], rec["voted_index"], rec["method"]) == ("Paris", 0, "vote_origin0.6")
    assert rec["agreement"] == pytest.approx(1.8 / 3)
    assert VoteHead().decide(group, gens)["prediction"] == "Lyon"


def test_each_rescoring_rule_weighs_its_members_as_written():
    table = [[-1.0, -3.0], [-2.0, -0.5]]  # member m, candidate c
    lengths, support, w = [1, 2], [1.0, 1.5], [1.5, 0.5]
    mix = [math.log((1.5 * math.exp(-1.0) + 0.5 * math.exp(-2.0)) / 2),
           math.log((1.5 * math.exp(-3.0) + 0.5 * math.exp(-0.5)) / 2)]
    assert combine(table, lengths, "mixture", weights=w) == pytest.approx(mix)
    assert combine(table, lengths, "product", weights=w) == pytest.approx([-2.5, -4.75])
    assert combine(table, lengths, "mean_token", weights=w) == pytest.approx([-1.25, -4.75 / 4])
    assert combine(table, lengths, "max", weights=w) == pytest.approx([math.log(1.5) - 1.0, math.log(0.5) - 0.5])
    assert combine(table, lengths, "vote", support, weights=w) == pytest.approx([1e6 + mix[0], 1.5e6 + mix[1]])
    for rule in ("mixture", "product", "mean_token", "max", "vote"):  # equal weights: the rule itself
        assert combine(table, lengths, rule, support, [1.0, 1.0]) == combine(table, lengths, rule, support)


def answers_of(records):
    return [(r["id"], r["generation"]) for r in records]


HEADS = [lambda s: LogitFusion("avg", origin_share=s), lambda s: LogitFusion("prob_avg", origin_share=s),
         lambda s: LogitFusion("entropy_weighted", origin_share=s), lambda s: VoteHead(s),
         lambda s: RerankHead("mixture", origin_share=s), lambda s: RerankHead("max", origin_share=s),
         lambda s: RerankHead("vote", origin_share=s)]


@pytest.mark.parametrize("make", HEADS, ids=["avg", "prob_avg", "entropy_weighted", "vote", "rerank_mixture",
                                              "rerank_max", "rerank_vote"])
def test_equal_weights_answer_as_the_head_without_a_share_and_batched_equals_alone(make, tiny_lm, template, groups):
    prompts = PromptTokenizer(tiny_lm.tokenizer, template)
    three = [dict(g, paraphrases=g["paraphrases"][:3]) for g in groups]
    assert answers_of(make(1 / 3).generate(tiny_lm.decoder, prompts, three)) == \
        answers_of(make(None).generate(tiny_lm.decoder, prompts, three))
    ragged = with_blocks([dict(g, paraphrases=g["paraphrases"][:k]) for g, k in zip(groups, [3, 1, 2])], m=2)
    head = make(0.7)
    batched = head.generate(tiny_lm.decoder, prompts, ragged)
    assert answers_of(batched) == [answers_of(head.generate(tiny_lm.decoder, prompts, [g]))[0] for g in ragged]


@pytest.mark.parametrize("make", HEADS[:4], ids=["avg", "prob_avg", "entropy_weighted", "vote"])
def test_a_share_near_one_answers_as_origin(make, tiny_lm, template, groups):
    prompts = PromptTokenizer(tiny_lm.tokenizer, template)
    three = [dict(g, paraphrases=g["paraphrases"][:3]) for g in groups]
    origin = OriginHead().generate(tiny_lm.decoder, prompts, three)
    assert [r["prediction"] for r in make(0.999).generate(tiny_lm.decoder, prompts, three)] == \
        [r["prediction"] for r in origin]


@pytest.mark.parametrize("rule", ["mixture", "max", "product"])
def test_a_rescoring_share_near_one_ranks_by_the_original_alone(rule, tiny_lm, template, groups):
    """A rescoring rule's limit is not origin: as the share nears 1 the candidate the original's own prompt scores
    highest wins, which need not be its greedy answer (a short answer of another member can outscore it)."""
    prompts = PromptTokenizer(tiny_lm.tokenizer, template)
    three = [dict(g, paraphrases=g["paraphrases"][:3]) for g in groups]
    scored = rerank_pass(tiny_lm.decoder, prompts, three)
    own_best = [cands[best(table[0])].prediction for cands, table in zip(scored.candidates, scored.tables)]
    near_one = RerankHead(rule, origin_share=1 - 1e-9).generate(tiny_lm.decoder, prompts, three)
    assert [r["prediction"] for r in near_one] == own_best
    assert any(len(cands) > 1 for cands in scored.candidates)  # a choice was made somewhere


SWEPT = [{"class_path": "selfens_pl.heads.LogitFusion", "init_args": {"method": "avg", "origin_share": 0.5}},
         {"class_path": "selfens_pl.heads.LogitFusion", "init_args": {"method": "prob_avg", "origin_share": 0.7}},
         {"class_path": "selfens_pl.heads.LogitFusion", "init_args": {"method": "avg"}},
         {"class_path": "selfens_pl.heads.VoteHead", "init_args": {"origin_share": 0.5}},
         {"class_path": "selfens_pl.heads.RerankHead", "init_args": {"rule": "max", "origin_share": 0.5}},
         {"class_path": "selfens_pl.heads.RerankHead", "init_args": {"rule": "vote", "origin_share": 0.5}}]
CHECKS = [("avg_origin0.5", lambda: LogitFusion("avg", origin_share=0.5)),
          ("prob_avg_origin0.7", lambda: LogitFusion("prob_avg", origin_share=0.7)),
          ("avg", lambda: LogitFusion("avg")),
          ("vote_origin0.5", lambda: VoteHead(0.5)),
          ("rerank_max_origin0.5", lambda: RerankHead("max", origin_share=0.5)),
          ("rerank_vote_origin0.5", lambda: RerankHead("vote", origin_share=0.5))]


@pytest.fixture(scope="module")
def swept_shares(tiny_model_dir, uneven_file, tmp_path_factory):  # noqa: F811
    return sweep_uneven(tiny_model_dir, uneven_file, tmp_path_factory.mktemp("sweep_shares") / "out", SWEPT, "1,2,3")


@pytest.mark.parametrize("k,m", [(3, 2), (2, 1), (3, 1)])
@pytest.mark.parametrize("label,make", CHECKS, ids=[c[0] for c in CHECKS])
def test_every_swept_run_with_a_share_is_what_the_head_answers(label, make, k, m, swept_shares, direct):  # noqa: F811
    assert_run_is_the_head(swept_shares / "runs" / f"{label}_k{k}_m{m}", make(), direct, k, m)


def test_the_engine_decodes_the_weighted_rules_beside_the_plain_one(swept_shares):
    settings = json.loads((swept_shares / "facts.settings.json").read_text())
    assert settings["rules"] == ["avg@0.5", "prob_avg@0.7", "avg@auto"]
    table = (swept_shares / "sweep.md").read_text()
    assert "| vote_origin0.5 |" in table and "| avg_origin0.5 |" in table


def test_the_fused_training_loss_weighs_the_rows_as_the_head_predicts(tiny_lm, template, groups):
    prompts = PromptTokenizer(tiny_lm.tokenizer, template)
    three = [dict(g, paraphrases=g["paraphrases"][:3]) for g in groups]
    with torch.no_grad():
        plain = answer_loss(tiny_lm.lm, tiny_lm.tokenizer, LogitFusion("avg"), prompts, three, "\n")
        equal = answer_loss(tiny_lm.lm, tiny_lm.tokenizer, LogitFusion("avg", origin_share=1 / 3), prompts, three,
                            "\n")
        near = answer_loss(tiny_lm.lm, tiny_lm.tokenizer, LogitFusion("avg", origin_share=0.999), prompts, three,
                           "\n")
        origin = answer_loss(tiny_lm.lm, tiny_lm.tokenizer, OriginHead(), prompts, three, "\n")
    torch.testing.assert_close(equal, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(near, origin, atol=2e-2, rtol=2e-2)
    assert not torch.allclose(near, plain, atol=1e-3)


@pytest.mark.parametrize("make", HEADS, ids=["avg", "prob_avg", "entropy_weighted", "vote", "rerank_mixture",
                                              "rerank_max", "rerank_vote"])
def test_auto_is_the_share_on_generated_groups_and_equal_on_written_ones(make, tiny_lm, template, groups):
    prompts = PromptTokenizer(tiny_lm.tokenizer, template)
    mixed = [dict(g, paraphrases=g["paraphrases"][:3], **({"paraphraser": "tiny"} if i % 2 == 0 else {}))
             for i, g in enumerate(groups)]
    auto_records = make("auto").generate(tiny_lm.decoder, prompts, mixed)  # one batch, generated and written
    auto = answers_of(auto_records)
    share = answers_of(make(GENERATED_SHARE).generate(tiny_lm.decoder, prompts, mixed))
    equal_records = make(None).generate(tiny_lm.decoder, prompts, mixed)
    equal = answers_of(equal_records)
    assert auto == [s if i % 2 == 0 else e for i, (s, e) in enumerate(zip(share, equal))]
    # each record says what its group's original got: the share on generated groups, null (equal) on written ones
    assert [r["origin_share"] for r in auto_records] == [GENERATED_SHARE if i % 2 == 0 else None
                                                        for i in range(len(mixed))]
    assert [r["origin_share"] for r in equal_records] == [None] * len(mixed)
    one = make("auto").generate(tiny_lm.decoder, prompts, [dict(mixed[0], paraphrases=mixed[0]["paraphrases"][:1])])
    assert one[0]["origin_share"] is None  # one paraphrase: nothing to share


def test_heads_without_the_flag_or_a_rule_that_weighs_say_so_in_their_records(tiny_lm, template, groups):
    prompts = PromptTokenizer(tiny_lm.tokenizer, template)
    generated = [dict(g, paraphrases=g["paraphrases"][:3], paraphraser="tiny") for g in groups[:2]]
    assert all(r["origin_share"] is None for r in LogitFusion("max").generate(tiny_lm.decoder, prompts, generated))
    assert all("origin_share" not in r for r in OriginHead().generate(tiny_lm.decoder, prompts, generated))
    assert all(r["origin_share"] == 0.3
               for r in RerankHead("mixture", origin_share=0.3).generate(tiny_lm.decoder, prompts, generated))


@pytest.fixture(scope="module")
def generated_file(tmp_path_factory):
    """Four demo groups of 3 paraphrases, the first and third marked as `paraphrase` marks its records
    (``paraphraser``)."""
    rows = [json.loads(line) for line in Path(demo_path()).read_text().splitlines()[:4]]
    rows = [{"id": r["id"], "paraphrases": r["paraphrases"][:3], "answers": r["answers"],
             **({"paraphraser": "tiny"} if i % 2 == 0 else {})} for i, r in enumerate(rows)]
    path = tmp_path_factory.mktemp("generated") / "groups.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def generated_args(model_dir, data, out=None):
    """The sweep's (``out`` given) or the datamodule's settings for the generated groups: two random blocks."""
    from test_sweep_short_groups import FIXTURES, SHOTS

    data_args = {"path": str(data), "task": "webqa", "few_shot": SHOTS,
                 "few_shot_pool": str(FIXTURES / "webqa_tiny.jsonl")}
    if out is None:
        return data_args
    return ["--model.model", str(model_dir), *[x for key, value in data_args.items()
                                         for x in (f"--data.{key}", value if isinstance(value, str)
                                                   else json.dumps(value))],
            "--heads", json.dumps(SWEPT_AUTO), "--ks", "1,3", "--ms", "1,2", "--resamples", "100",
            "--model.max_new_tokens", "8", "--model.stop", "null", "--batch_rows", "12", "--output_dir", str(out)]


@pytest.fixture(scope="module")
def generated_direct(tiny_model_dir, generated_file):
    from selfens_pl.data.datamodule import ParaphraseDataModule
    from selfens_pl.lit.module import SelfEnsembleLM

    dm = ParaphraseDataModule(**generated_args(tiny_model_dir, generated_file), demo_blocks=2)
    dm.setup()
    lm = SelfEnsembleLM(model=str(tiny_model_dir), max_new_tokens=8, stop=None)
    lm.configure_model()
    return lm, lm.prompts(dm.template), dm.groups


SWEPT_AUTO = [{"class_path": "selfens_pl.heads.LogitFusion", "init_args": {"method": "avg"}},
              {"class_path": "selfens_pl.heads.LogitFusion", "init_args": {"method": "avg", "origin_share": None}},
              {"class_path": "selfens_pl.heads.VoteHead", "init_args": {"origin_share": None}},
              {"class_path": "selfens_pl.heads.RerankHead", "init_args": {"rule": "vote"}},
              {"class_path": "selfens_pl.heads.RerankHead", "init_args": {"rule": "max", "origin_share": None}}]
CHECKS_AUTO = [("avg", lambda: LogitFusion("avg")), ("avg_equal", lambda: LogitFusion("avg", origin_share=None)),
               ("vote", lambda: VoteHead()), ("vote_equal", lambda: VoteHead(None)),
               ("rerank_vote", lambda: RerankHead("vote")),
               ("rerank_max_equal", lambda: RerankHead("max", origin_share=None))]


@pytest.fixture(scope="module")
def swept_auto(tiny_model_dir, generated_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep_auto") / "out"
    sweep.main(generated_args(tiny_model_dir, generated_file, out))
    return out


@pytest.mark.parametrize("k,m", [(3, 2), (3, 1)])
@pytest.mark.parametrize("label,make", CHECKS_AUTO, ids=[c[0] for c in CHECKS_AUTO])
def test_the_swept_default_weighs_the_generated_groups_as_the_head_does(label, make, k, m, swept_auto,
                                                                       generated_direct):
    assert any("paraphraser" in g for g in generated_direct[2]) and not all("paraphraser" in g
                                                                           for g in generated_direct[2])
    assert_run_is_the_head(swept_auto / "runs" / f"{label}_k{k}_m{m}", make(), generated_direct, k, m)
    weighs = not label.endswith("_equal")
    generated = {g["id"]: "paraphraser" in g for g in generated_direct[2]}
    shares = {r["id"]: r["origin_share"] for r in load_run(swept_auto / "runs" / f"{label}_k{k}_m{m}").records}
    assert shares == {i: GENERATED_SHARE if weighs and gen else None for i, gen in generated.items()}
    settings = json.loads((swept_auto / "facts.settings.json").read_text())
    assert settings["rules"] == ["avg@auto", "avg"]
    assert settings["generated_share"] == GENERATED_SHARE  # what "auto" meant for the rows fused with it


def test_a_sweep_never_reuses_rows_fused_under_another_default_share(swept_auto, tiny_model_dir, generated_file,
                                                                      generated_direct, tmp_path, monkeypatch,
                                                                      capsys):
    """The rows fused with ``avg@auto`` hold the share ``auto`` resolved to when they were decoded: after the
    default changes, the same sweep decodes them again (and says so) instead of reporting the old share's answers
    under the new one."""
    import shutil

    from selfens_pl.data import origin_share

    out = tmp_path / "out"
    shutil.copytree(swept_auto, out)
    monkeypatch.setattr(origin_share, "GENERATED_SHARE", 0.6)
    sweep.main(generated_args(tiny_model_dir, generated_file, out))
    assert "written with other settings; its rows are not reused" in capsys.readouterr().out
    assert json.loads((out / "facts.settings.json").read_text())["generated_share"] == 0.6
    generated = {g["id"]: "paraphraser" in g for g in generated_direct[2]}
    shares = {r["id"]: r["origin_share"] for r in load_run(out / "runs" / "avg_k3_m1").records}
    assert shares == {i: 0.6 if gen else None for i, gen in generated.items()}
    assert_run_is_the_head(out / "runs" / "avg_k3_m1", LogitFusion("avg"), generated_direct, 3, 1)


def test_the_share_grid_script_gives_each_head_s_own_swept_gain(swept_auto, tiny_model_dir, generated_file):
    """``scripts/origin_share_grid.py`` (the table the default share was chosen from) reads a sweep's engine rows and
    decodes nothing: at the default share its runs answer every fact as the swept default runs did, and it prints one
    row per head and a column per share."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from origin_share_grid import deriver, grid_runs, main

    from selfens_pl.commands.sweep import build_parser, prepare

    args = generated_args(tiny_model_dir, generated_file, swept_auto)
    sweep_ = prepare(build_parser(), args)[3]
    generated = {g["id"] for g in sweep_.groups if "paraphraser" in g}  # a number weighs written groups too
    derive = deriver(sweep_)
    for k, m in [(3, 1), (3, 2)]:
        runs = grid_runs(derive, [0.5, GENERATED_SHARE], k, m)
        for label in ("vote", "rerank_vote"):
            swept = {r["id"]: r["prediction"] for r in load_run(swept_auto / "runs" / f"{label}_k{k}_m{m}").records
                     if r["id"] in generated}
            assert {r["id"]: r["prediction"] for r in runs[label][1].records if r["id"] in generated} == swept
            assert {r["origin_share"] for r in runs[label][0].records} - {None} == {0.5}  # (None: one paraphrase)
    text = main(args + ["--shares", "0.5,0.9"])
    assert text.count("| head | share 0.5 | share 0.9 |") == 2  # K=3 at M = 1 and 2 (K = 1 shares nothing)
    assert all(f"| {name} | " in text for name in ("vote", "rerank_mixture", "rerank_max", "rerank_vote"))
    with pytest.raises(UserError, match=r"--shares=1\.5"):
        main(args + ["--shares", "0.5,1.5"])


def test_a_generic_run_under_auto_records_what_auto_meant(monkeypatch):
    """A head the sweep runs on its own (here a cascade escalating to avg, decoded per configuration) keeps its
    runs on disk by their settings: under ``auto`` those name the default share, so a run made under another default
    is not reused; a head with an explicit share or none does not depend on the default."""
    from types import SimpleNamespace

    from selfens_pl.data import origin_share
    from selfens_pl.heads import CascadeHead
    from selfens_pl.sweep.runner import Sweep, head_spec

    sweep_ = SimpleNamespace(base={"model": "m"})
    auto = head_spec(CascadeHead(ensemble=LogitFusion("avg")))
    assert Sweep.settings(sweep_, auto, 3, 1)["generated_share"] == GENERATED_SHARE
    for fixed in (LogitFusion("avg", origin_share=0.5), LogitFusion("avg", origin_share=None), LogitFusion("max")):
        assert "generated_share" not in Sweep.settings(sweep_, head_spec(fixed), 3, 1)
    before = Sweep.settings(sweep_, auto, 3, 1)
    monkeypatch.setattr(origin_share, "GENERATED_SHARE", 0.6)
    assert Sweep.settings(sweep_, auto, 3, 1) != before
