"""Answer-level rescoring: the rules on hand-made scores, the candidates, the scoring pass against a plain forward,
and RerankHead's equivalences (one paraphrase = origin, batched = alone)."""

from __future__ import annotations

import math

import pytest
import torch

from selfens_pl.engine.batches import prompt_batch, rows_batch
from selfens_pl.heads import LogitFusion, OriginHead, RerankHead
from selfens_pl.heads.rerank import rerank_pass
from selfens_pl.scoring.rescoring import RERANK_RULES, best, candidates, combine

# 3 members x 2 candidates: sequence log-probabilities; candidate 0 has 1 token, candidate 1 has 4
TABLE = [[math.log(0.5), math.log(0.30)],
         [math.log(0.1), math.log(0.40)],
         [math.log(0.1), math.log(0.35)]]
LENGTHS = [1, 4]


def test_each_rule_on_a_hand_made_table():
    mixture = combine(TABLE, LENGTHS, "mixture")
    assert mixture == pytest.approx([math.log(0.7 / 3), math.log(1.05 / 3)])
    assert best(mixture) == 1
    product = combine(TABLE, LENGTHS, "product")
    assert product == pytest.approx([math.log(0.005), math.log(0.042)]) and best(product) == 1
    assert best(combine(TABLE, LENGTHS, "max")) == 0  # 0.5 is the surest single member
    mean_token = combine(TABLE, LENGTHS, "mean_token")
    assert mean_token == pytest.approx([math.log(0.005) / 3, math.log(0.042) / 3 / 4])
    assert best(mean_token) == 1  # per token, the long candidate is likelier
    # vote: support first (candidate 0 is agreed with by 2 members), mixture only among equal support
    assert best(combine(TABLE, LENGTHS, "vote", support=[2, 1])) == 0
    assert best(combine(TABLE, LENGTHS, "vote", support=[1, 1])) == 1


def test_ties_go_to_the_candidate_of_the_lowest_member():
    tied = [[-1.0, -1.0], [-2.0, -2.0]]
    for rule in RERANK_RULES:
        assert best(combine(tied, [2, 2], rule, support=[1, 1])) == 0


def test_rule_errors():
    with pytest.raises(ValueError, match="rule='sum'"):
        combine(TABLE, LENGTHS, "sum")
    with pytest.raises(RuntimeError, match="needs each candidate's support"):
        combine(TABLE, LENGTHS, "vote")
    with pytest.raises(RuntimeError, match="one score per member and candidate"):
        combine([[0.0]], LENGTHS, "mixture")
    with pytest.raises(ValueError, match="rule='x'"):
        RerankHead(rule="x")


def test_candidates_are_distinct_non_empty_answers_in_member_order_with_their_support():
    cands = candidates(["Paris", "paris, france", "", "Paris", "Lyon"], [[1], [2, 3], [], [1], [4]],
                       extra=[("Lyon", [9]), ("Nice", [5])])
    assert [(c.prediction, c.member, c.tokens) for c in cands] == [
        ("Paris", 0, [1]), ("paris, france", 1, [2, 3]), ("Lyon", 4, [4]), ("Nice", -1, [5])]
    assert [c.support for c in cands] == [3, 3, 1, 0]  # lemma rule, both ways: "Paris" inside "paris, france"


def test_scoring_equals_a_plain_forward_of_prompt_and_continuation(tiny_lm, template, groups):
    """score_continuations (cache copies, several continuations per prompt, batched by length) against the model's
    own forward over the whole prompt + continuation, no cache."""
    dec, prompts = tiny_lm.decoder, tiny_lm.prompts(template)
    items = [(g, p) for g in groups for p in g["paraphrases"][:2]]
    encoded = dec.encode(prompt_batch(dec, prompts, items))
    conts = [[[11, 12, 13], [7], [21, 22]], [[5, 6]], [[7]]]  # packed several per row; all single tokens
    rows = [r for r in range(len(items)) for _ in conts]
    packed = dec.score_continuations(encoded, rows, [c for _ in items for c in conts], chunk_tokens=5)
    scored = [lp for row in packed for lp in row]
    flat = [(row, cont) for row, cs in zip(rows, [c for _ in items for c in conts]) for cont in cs]
    for i, (row, cont) in enumerate(flat):
        ids = torch.tensor([prompts.prompt_ids(items[row][1]) + cont])
        with torch.inference_mode():
            logp = tiny_lm.lm(input_ids=ids).logits[0].float().log_softmax(-1)
        start = ids.shape[1] - len(cont)
        expected = [logp[start - 1 + t, tok].item() for t, tok in enumerate(cont)]
        assert scored[i] == pytest.approx(expected, abs=2e-4)


def test_each_candidate_scored_under_its_own_member_is_its_greedy_log_probability(tiny_lm, template, groups):
    scored = rerank_pass(tiny_lm.decoder, tiny_lm.prompts(template), groups)
    assert all(scored.candidates)  # every group has candidates to check
    for g, cands in enumerate(scored.candidates):
        for c, cand in enumerate(cands):
            gen = scored.gens[g][cand.member]
            assert scored.tables[g][cand.member][c] == pytest.approx(sum(gen.logprobs), abs=2e-4)


def test_one_paraphrase_answers_as_origin(tiny_lm, template, groups):
    one = [dict(g, paraphrases=g["paraphrases"][:1]) for g in groups]
    prompts = tiny_lm.prompts(template)
    origin = OriginHead().generate(tiny_lm.decoder, prompts, one)
    for rule in RERANK_RULES:
        got = RerankHead(rule).generate(tiny_lm.decoder, prompts, one)
        assert [r["generation"] for r in got] == [r["generation"] for r in origin]
    fused = RerankHead(fused="avg").generate(tiny_lm.decoder, prompts, one)  # the fused answer is origin's too
    assert [r["generation"] for r in fused] == [r["generation"] for r in origin]


@pytest.mark.parametrize("rule", RERANK_RULES)
def test_batched_ragged_equals_each_group_alone(rule, tiny_lm, template, groups):
    data = [dict(g, paraphrases=g["paraphrases"][:k]) for g, k in zip(groups, [3, 1, 2])]
    head, prompts = RerankHead(rule), tiny_lm.prompts(template)
    batched = head.generate(tiny_lm.decoder, prompts, data)
    alone = [head.generate(tiny_lm.decoder, prompts, [g])[0] for g in data]
    assert [r["generation"] for r in batched] == [r["generation"] for r in alone]
    assert [r["candidates"] for r in batched] == [r["candidates"] for r in alone]


def test_the_fused_answer_joins_the_candidates(tiny_lm, template, groups):
    """On the fixture groups every fused answer is new (no member gave it: it joins as member -1); with one
    paraphrase the fused answer is that member's own (it does not join twice)."""
    prompts = tiny_lm.prompts(template)
    fused = LogitFusion("avg").generate(tiny_lm.decoder, prompts, groups)
    recs = RerankHead(fused="avg").generate(tiny_lm.decoder, prompts, groups)
    for rec, f in zip(recs, fused):
        assert f["prediction"] and f["prediction"] not in rec["paraphrase_predictions"]
        assert (rec["candidates"][-1]["prediction"], rec["candidates"][-1]["member"]) == (f["prediction"], -1)
        assert [c["member"] for c in rec["candidates"][:-1]] == sorted({rec["paraphrase_predictions"].index(p)
                                                                       for p in rec["paraphrase_predictions"] if p})
    one = [dict(g, paraphrases=g["paraphrases"][:1]) for g in groups]
    for rec, f in zip(RerankHead(fused="avg").generate(tiny_lm.decoder, prompts, one),
                      LogitFusion("avg").generate(tiny_lm.decoder, prompts, one)):
        assert f["prediction"] and rec["paraphrase_predictions"] == [f["prediction"]]
        assert [(c["prediction"], c["member"]) for c in rec["candidates"]] == [(f["prediction"], 0)]
    assert RerankHead(fused="avg").method == "rerank_mixture_avg"


def test_scoring_reuses_the_prompt_encoding(tiny_lm, template, groups):
    """One prefill for the members; the scoring pass feeds only continuation tokens (no prompt token twice)."""
    dec, prompts = tiny_lm.decoder, tiny_lm.prompts(template)
    before = dec.stats.prompt_tokens
    rerank_pass(dec, prompts, groups)
    items = [(g, p) for g in groups for p in g["paraphrases"]]
    assert dec.stats.prompt_tokens - before == rows_batch(
        dec, [prompts.question_ids(p) for _, p in items]).pad_mask.sum().item() + len(prompts.prefix_ids)
