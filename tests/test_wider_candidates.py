"""Wider candidates for answer-level rescoring: ``RerankHead(first_tokens=k)`` also rescores each member's answers
that start with its 2nd .. k-th most likely first token (:mod:`selfens_pl.engine.alternatives`).

Checked on the tiny real model: ``k = 1`` writes the records the head wrote before ``first_tokens`` existed (a file
of them, ``tests/fixtures/rerank_first_tokens1_records.json``, written by that head); every alternative starts with
the right ranked token and continues as a plain forward of prompt + its tokens says greedy decoding must; batched
equals alone; one decode adds every alternative; the candidates and the oracles.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_demos import with_blocks

from selfens_pl.data.datamodule import demo_path
from selfens_pl.engine.alternatives import decode_alternatives, rank_tokens
from selfens_pl.engine.decoding import GreedyDecoder
from selfens_pl.errors import InternalError, UserError
from selfens_pl.heads import CascadeHead, RerankHead
from selfens_pl.engine.members import encode_members
from selfens_pl.heads.rerank import rerank_pass
from selfens_pl.scoring.rescoring import candidates
from selfens_pl.scoring.summaries import record_scores

TODAY = Path(__file__).parent / "fixtures" / "rerank_first_tokens1_records.json"


@pytest.fixture(scope="module")
def data() -> list[dict]:
    """Five demo groups of 3, 3, 2, 3 and 1 paraphrases (the groups the fixture file was written for)."""
    recs = [json.loads(line) for line in Path(demo_path()).read_text().splitlines()[:5]]
    return [{"id": r["id"], "paraphrases": r["paraphrases"][:k], "answers": r["answers"], "confidences": None}
            for r, k in zip(recs, [3, 3, 2, 3, 1])]


@pytest.fixture(scope="module")
def space(tiny_lm) -> GreedyDecoder:
    """Answers that stop at a space: they end at different steps, by the stop string, EOS or max_new_tokens."""
    return GreedyDecoder(tiny_lm.lm, tiny_lm.tokenizer, max_new_tokens=8, stop=" ", compile=False)


def counted(dec, head, prompts, groups) -> tuple[list[dict], list[int]]:
    """``head``'s records and the rows of each ``decode_n_tokens`` call it made."""
    calls = []
    run = dec.decode_n_tokens
    dec.decode_n_tokens = lambda batch, *fns: calls.append(batch.rows) or run(batch, *fns)
    try:
        return head.generate(dec, prompts, groups), calls
    finally:
        del dec.decode_n_tokens


def assert_records_equal(got: list[dict], want: list[dict]) -> None:
    """Equal records; the floats (mean_prob, the rounded scores) within float noise across machines."""
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.keys() == b.keys()
        assert {k: v for k, v in a.items() if k not in ("mean_prob", "candidates")} == \
            {k: v for k, v in b.items() if k not in ("mean_prob", "candidates")}
        assert a["mean_prob"] == pytest.approx(b["mean_prob"], rel=1e-4, abs=1e-6)
        assert [{k: v for k, v in c.items() if k != "score"} for c in a["candidates"]] == \
            [{k: v for k, v in c.items() if k != "score"} for c in b["candidates"]]
        assert [c["score"] for c in a["candidates"]] == pytest.approx([c["score"] for c in b["candidates"]],
                                                                      abs=2e-3)


def test_one_first_token_writes_the_records_of_the_head_before_it(tiny_lm, template, data, space):
    """``first_tokens=1`` (explicit) against the records the head wrote before the option existed: every group,
    with and without few-shot blocks, three rules and a fused candidate, two stop rules; one decode per pass."""
    today = json.loads(TODAY.read_text())
    prompts = tiny_lm.prompts(template)
    heads = {"mixture": lambda: RerankHead(first_tokens=1), "vote": lambda: RerankHead("vote", first_tokens=1),
             "fused_avg": lambda: RerankHead(fused="avg", first_tokens=1)}
    checked = 0
    for dname, dec in [("nostop", tiny_lm.decoder), ("space", space)]:
        for gname, groups in [("plain", data), ("blocks", with_blocks(data, m=2))]:
            for hname, make in heads.items():
                got, calls = counted(dec, make(), prompts, groups)
                # records gained "origin_share" after these were written: written groups, every member equal
                assert [r.pop("origin_share") for r in got] == [None] * len(got)
                assert_records_equal(got, today[f"{dname}/{gname}/{hname}"])
                assert len(calls) == (2 if hname == "fused_avg" else 1)  # no decode of alternatives
                checked += 1
    assert checked == len(today)


@pytest.mark.parametrize("blocks", [False, True], ids=["plain", "blocks"])
def test_each_alternative_starts_with_its_ranked_token_and_continues_greedily(blocks, tiny_lm, template, data,
                                                                              space):
    """Against a plain forward of the whole prompt + the alternative's tokens (no cache, no prefix sharing): its
    first token is the rank-r token of the prompt's next-token logits (r = 1..k-1; ties to the lower id), its first
    log-probability that token's log_softmax there, every later token the argmax after the earlier ones, and it
    ends exactly where greedy decoding must (the stop string, EOS, or max_new_tokens)."""
    groups = with_blocks(data[:3], m=2) if blocks else data[:3]
    prompts, k = tiny_lm.prompts(template), 4
    items, encoded, _ = encode_members(space, prompts, groups)
    flat = [it for own in items for it in own]
    alternatives = decode_alternatives(space, encoded, list(range(len(flat))), k)
    assert [len(own) for own in alternatives] == [k - 1] * len(flat)
    ends = set()
    for (group, text, block), own in zip(flat, alternatives):
        ids = prompts.for_block(group, block).prompt_ids(text)
        order = None
        for r, gen in enumerate(own, start=1):
            tokens = gen.continuation
            with torch.inference_mode():
                logits = tiny_lm.lm(input_ids=torch.tensor([ids + tokens[:-1]])).logits[0, len(ids) - 1:].float()
            logp = logits.log_softmax(-1)
            if order is None:
                order = torch.argsort(logits[0], descending=True, stable=True)
            assert tokens[0] == order[r].item()  # the rank-r first token
            assert tokens[0] != order[0].item()
            if gen.logprobs:  # (an answer ended by EOS at once records no token)
                assert gen.logprobs[0] == pytest.approx(logp[0, tokens[0]].item(), abs=2e-4)
            for t in range(1, len(tokens)):
                assert tokens[t] == logits[t].argmax().item(), (r, t)  # greedy after the first token
            assert gen.logprobs[1:] == pytest.approx([logp[t, tokens[t]].item() for t in range(1, len(gen.token_ids))],
                                                     abs=2e-4)
            # it ends where greedy decoding must, and not earlier
            assert all(" " not in tiny_lm.tokenizer.decode(gen.token_ids[:t]).lstrip()
                       for t in range(1, len(gen.token_ids)))
            if gen.end == "stop":
                assert " " in gen.text.lstrip()
            elif gen.end == "eos":
                assert tokens[-1] in space.eos_ids
            else:
                assert len(gen.token_ids) == space.max_new_tokens
            ends.add(gen.end)
    assert ends >= {"stop", None}, "the alternatives must end in different ways"


def test_ranks_are_repeated_argmax():
    logits = torch.tensor([[0.5, 2.0, 2.0, -1.0, 3.0], [1.0, 1.0, 1.0, 1.0, 0.0]])
    assert rank_tokens(logits, 4).tolist() == [[4, 1, 2, 0], [0, 1, 2, 3]]  # ties: the lower id first


def test_one_decode_for_every_alternative(tiny_lm, template, groups):
    """k = 3: the members' decode, then ONE decode of every member's two alternatives; their candidates scored."""
    dec, prompts = tiny_lm.decoder, tiny_lm.prompts(template)
    calls = []
    run = dec.decode_n_tokens
    dec.decode_n_tokens = lambda batch, *fns: calls.append(batch.rows) or run(batch, *fns)
    try:
        scored = rerank_pass(dec, prompts, groups, first_tokens=3)
    finally:
        del dec.decode_n_tokens
    members = sum(len(g["paraphrases"]) for g in groups)
    assert calls == [members, 2 * members]
    for g, cands in enumerate(scored.candidates):  # each candidate under its own member: its decode's log-prob
        assert any(c.rank > 0 for c in cands)
        for c, cand in enumerate(cands):
            gen = scored.gens[g][cand.member] if cand.rank == 0 else scored.alternatives[g][cand.member][cand.rank - 1]
            assert (gen.prediction, gen.continuation) == (cand.prediction, cand.tokens)
            assert scored.tables[g][cand.member][c] == pytest.approx(sum(gen.logprobs), abs=2e-4)


def test_batched_equals_each_group_alone(tiny_lm, template, groups, space, tmp_path):
    """k = 3, ragged groups: several groups in one pass answer as each alone (a rule, a fused candidate, and the
    learned chooser over the larger candidate lists)."""
    from selfens_pl.scoring.chooser import FEATURES, Chooser

    chooser = Chooser([0.5, 0.2, 0.3, 0.1, 1.0, 0.4, 0.2, 0.1, 0.3, 0.2, -0.5, 0.3, -0.1, -0.4], 0.0,
                      [0.0] * len(FEATURES), [1.0] * len(FEATURES)).save(tmp_path / "chooser.json")
    data = [dict(g, paraphrases=g["paraphrases"][:k]) for g, k in zip(groups, [3, 1, 2])]
    prompts = tiny_lm.prompts(template)
    for head in (RerankHead(first_tokens=3), RerankHead("vote", fused="prob_avg", first_tokens=3),
                 RerankHead("learned", chooser=str(chooser), first_tokens=3)):
        for dec in (tiny_lm.decoder, space):
            batched = head.generate(dec, prompts, data)
            alone = [head.generate(dec, prompts, [g])[0] for g in data]
            assert_records_equal(batched, alone)
            assert all(c["rank"] in (0, 1, 2) for r in batched for c in r["candidates"])


def test_rows_label_and_flag_checks(tiny_lm, template, groups):
    head = RerankHead(first_tokens=3)
    assert head.decoded_rows(4) == 12 and RerankHead(fused="avg", first_tokens=3).decoded_rows(4) == 13
    assert RerankHead(first_tokens=1).decoded_rows(4) == 4
    assert head.method == head.label == "rerank_mixture_top3"
    assert RerankHead(first_tokens=1).label == "rerank_mixture"
    assert RerankHead(fused="avg", first_tokens=2).method == "rerank_mixture_avg_top2"
    assert RerankHead("learned", first_tokens=3).label == "rerank_learned_top3_cv"
    assert CascadeHead(ensemble=head, first=2).decoded_rows(6) == 18  # the ensemble's alternatives counted
    for bad in (0, -1, 1.5, True):
        with pytest.raises(UserError, match=r"--model\.head\.init_args\.first_tokens"):
            RerankHead(first_tokens=bad)
    # decide() without (or with the wrong number of) alternatives would rescore the greedy answers only: refused
    gens = rerank_pass(tiny_lm.decoder, tiny_lm.prompts(template), groups[:1]).gens[0]
    with pytest.raises(InternalError, match="needs each member's alternative answers"):
        head.decide(groups[0], gens, lambda cands: [[0.0] * len(cands)] * len(gens))
    with pytest.raises(InternalError, match="expected 2 per member"):
        head.decide(groups[0], gens, lambda cands: [[0.0] * len(cands)] * len(gens), alternatives=[[]] * len(gens))


def table_of(cands, table):
    """``scores(candidates) -> [N][C]`` from a pass's candidates and table (by prediction)."""
    columns = {c.prediction: [row[i] for row in table] for i, c in enumerate(cands)}
    return lambda asked: [[columns[c.prediction][m] for c in asked] for m in range(len(table))]


def test_decide_over_a_pass_is_generate(tiny_lm, template, groups, space):
    """What the sweep does: decide() over the pass's answers, alternatives and scores is generate's record."""
    prompts = tiny_lm.prompts(template)
    data = with_blocks(groups, m=2)
    for head in (RerankHead(first_tokens=3), RerankHead("vote", first_tokens=2)):
        scored = rerank_pass(space, prompts, data, first_tokens=head.first_tokens)
        decided = [head.decide(group, scored.gens[g], table_of(scored.candidates[g], scored.tables[g]),
                               alternatives=scored.alternatives[g]) for g, group in enumerate(data)]
        assert_records_equal(decided, head.generate(space, prompts, data))


def test_wider_candidates_contain_the_greedy_ones(tiny_lm, template, groups, space):
    prompts = tiny_lm.prompts(template)
    data = with_blocks(groups, m=2)
    one = RerankHead().generate(space, prompts, data)
    three = RerankHead(first_tokens=3).generate(space, prompts, data)
    for a, b in zip(one, three):
        greedy = [{k: v for k, v in c.items() if k != "score"} for c in a["candidates"]]
        assert [{k: v for k, v in c.items() if k not in ("score", "rank")} for c in b["candidates"][:len(greedy)]] \
            == greedy  # the greedy answers first, in the same order, with the same support (greedy answers only)
        assert all(c["rank"] == 0 for c in b["candidates"][:len(greedy)])
        assert all(c["rank"] > 0 for c in b["candidates"][len(greedy):])
        assert len(b["candidates"]) > len(greedy)
        assert len({c["prediction"] for c in b["candidates"]}) == len(b["candidates"])  # distinct
        assert b["paraphrase_predictions"] == a["paraphrase_predictions"]


def test_candidates_put_alternatives_after_the_greedy_answers():
    cands = candidates(["Paris", "", "Lyon"], [[1], [], [4]], extra=[("Nice", [5]), ("Rome", [6])],
                       alternatives=[[("Lyon", [7]), ("Rome", [8])], [("Nice", [9]), ("", [2])], [("Paris", [3])]])
    assert [(c.prediction, c.member, c.rank, c.tokens, c.support) for c in cands] == [
        ("Paris", 0, 0, [1], 1), ("Lyon", 2, 0, [4], 1), ("Rome", 0, 2, [8], 0), ("Nice", 1, 1, [9], 0)]
    with pytest.raises(InternalError, match="alternatives for 3 members"):
        candidates(["a", "b", "c"], [[1], [2], [3]], alternatives=[[("x", [1])]])


def test_the_candidate_oracle_covers_the_member_oracle_on_a_run(tiny_model_dir, template, groups):
    """predict's scoring (SelfEnsembleLM.predict_step): ``candidate_correct`` whenever ``member_correct``, and the
    summary's shares. The answers are set so that one group's member answer is right, one group only has a right
    alternative and one has nothing right."""
    from selfens_pl.lit.module import SelfEnsembleLM

    lm = SelfEnsembleLM(model=str(tiny_model_dir), head=RerankHead(first_tokens=3), max_new_tokens=8, stop=" ")
    lm.configure_model()
    first = lm.predict_step({"groups": groups, "template": template})
    member = first[0]["paraphrase_predictions"][1]
    alternative = next(c["prediction"] for c in first[1]["candidates"]
                       if c["rank"] > 0 and c["prediction"] not in first[1]["paraphrase_predictions"])
    asked = [dict(groups[0], answers=[member]), dict(groups[1], answers=[alternative]),
             dict(groups[2], answers=["nothing the model says"])]
    records = lm.predict_step({"groups": asked, "template": template})
    assert [(r["member_correct"], r["candidate_correct"]) for r in records] == [(True, True), (False, True),
                                                                                (False, False)]
    scores = record_scores(records)
    assert (scores["member_oracle"], scores["candidate_oracle"]) == (pytest.approx(1 / 3), pytest.approx(2 / 3))
    assert "candidate_oracle" not in record_scores([dict(r, candidate_correct=None) for r in records])
    assert "member_oracle" in record_scores(records) and scores["accuracy"] <= scores["candidate_oracle"]
