"""VoteHead and answer agreement: majority under the lemma rule, ties to the highest mean token log-probability."""

from __future__ import annotations

import math

import pytest

from selfens_pl.heads import OriginHead, PerPromptHead, VoteHead
from selfens_pl.scoring.agreement import Lemmas, agreement_share, mean_logprob, support, vote
from selfens_pl.scoring.metrics import is_match


def test_agreement_is_the_bidirectional_lemma_match():
    lemmas = Lemmas()
    pairs = [("Paris", "Paris, France"), ("cats", "the cat"), ("Paris", "London"), ("", "Paris"), ("Ran", "run")]
    for a, b in pairs:
        expected = is_match(a, [b], bidirectional=True)
        assert lemmas.agree(a, b) == lemmas.agree(b, a) == expected
    assert lemmas.agree("cats", "cat") and not lemmas.agree("", "")


def test_support_counts_agreeing_answers():
    assert support(["Paris", "paris", "Paris, France", "London", ""]) == [3, 3, 3, 1, 0]


def test_majority_wins_whatever_the_log_probabilities():
    answers = ["London", "Paris", "the city of Paris"]
    index, votes = vote(answers, [[-0.01], [-1.0], [-2.0, -2.0]])
    assert (index, votes) == (1, 2)  # Paris (2 votes) beats a surer London (1 vote); "the city of Paris" also has 2
    # ... and between the two 2-vote answers the higher mean token log-probability wins
    index, _ = vote(answers, [[-0.01], [-3.0], [-1.0, -2.0]])
    assert index == 2


def test_tie_goes_to_the_highest_mean_token_log_probability():
    answers = ["Paris", "London", "Berlin"]
    assert vote(answers, [[-1.0, -1.0], [-0.2, -0.6], [-0.5]]) == (1, 1)  # means -1.0, -0.4, -0.5
    assert vote(answers, [[-0.1], [-0.2, -0.6], [-0.5]]) == (0, 1)


def test_full_tie_goes_to_the_lowest_index_and_empty_answers_never_win():
    assert vote(["a cat", "a dog"], [[-0.5], [-0.5]])[0] == 0
    assert vote(["", "Rome"], [[], [-9.0]]) == (1, 1)  # an empty answer has no support and mean -inf
    assert vote(["", ""], [[], []]) == (0, 0)
    assert mean_logprob([]) == -math.inf


def test_vote_input_errors():
    with pytest.raises(RuntimeError, match="log-probabilities"):
        vote(["a", "b"], [[-1.0]])


def test_agreement_share():
    assert agreement_share("Paris", ["Paris", "London", "Paris, France", ""]) == 0.5
    assert agreement_share("", ["Paris"]) == 0.0
    with pytest.raises(RuntimeError):
        agreement_share("Paris", [])


def test_vote_head_is_the_vote_over_per_prompt_answers(tiny_lm, template, groups):
    """One record per group: the per_prompt answer chosen by vote(), with that answer's own confidence."""
    prompts = tiny_lm.prompts(template)
    voted = VoteHead().generate(tiny_lm.decoder, prompts, groups)
    each = PerPromptHead().generate(tiny_lm.decoder, prompts, groups)
    assert len(voted) == len(groups)
    for rec, g in zip(voted, groups):
        mine = [r for r in each if r["id"] == g["id"]]
        answers = [r["prediction"] for r in mine]
        assert rec["paraphrase_predictions"] == answers
        assert rec["prediction"] == answers[rec["voted_index"]]
        assert rec["method"] == "vote" and rec["paraphrase_index"] is None
        assert rec["mean_prob"] == pytest.approx(mine[rec["voted_index"]]["mean_prob"])
        counts = support(answers)
        assert rec["agreement"] == pytest.approx(max(counts) / len(answers))
        assert counts[rec["voted_index"]] == max(counts)


def test_per_prompt_records_carry_their_agreement(tiny_lm, template, groups):
    recs = PerPromptHead().generate(tiny_lm.decoder, tiny_lm.prompts(template), groups)
    for rec in recs:
        answers = [r["prediction"] for r in recs if r["id"] == rec["id"]]
        assert rec["agreement"] == pytest.approx(agreement_share(rec["prediction"], answers))
        assert rec["mean_prob"] is None or 0 < rec["mean_prob"] <= 1


def test_origin_agreement_is_opt_in(tiny_lm, template, groups):
    prompts = tiny_lm.prompts(template)
    plain = OriginHead().generate(tiny_lm.decoder, prompts, groups)
    assert all(r["agreement"] is None for r in plain)  # not computed: never faked
    counted = OriginHead(agreement=True).generate(tiny_lm.decoder, prompts, groups)
    each = PerPromptHead().generate(tiny_lm.decoder, prompts, groups)
    for rec in counted:
        answers = [r["prediction"] for r in each if r["id"] == rec["id"]]
        assert rec["paraphrase_predictions"] == answers
        assert rec["agreement"] == pytest.approx(agreement_share(rec["prediction"], answers))
    assert [r["generation"] for r in counted] == [r["generation"] for r in plain]
