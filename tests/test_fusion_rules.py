"""Each fusion rule on hand-made logits: the reference code's (avg, max, weighted_*) and prob_avg, entropy_weighted and
contextual calibration."""

from __future__ import annotations

import math

import pytest
import torch

from selfens_pl.engine.fusion import RULES, fuse_logits, token_logprob

# one group, three paraphrases, vocabulary of four tokens
LOGITS = torch.tensor([[[4.0, 0.0, 0.0, 0.0],
                        [0.0, 3.0, 2.9, 0.0],
                        [0.0, 3.0, 2.9, 0.0]]])
WEIGHTS = torch.tensor([[0.9, 0.2, 0.1]])
# one group, two paraphrases, vocabulary of three tokens:
# row 0 is sure of token 0 and rules token 2 out; row 1 is sure of token 2
VETO = torch.tensor([[[3.0, 0.0, -10.0],
                      [0.0, 0.0, 6.0]]])


def test_avg_is_the_mean_of_raw_logits():
    fused = fuse_logits(LOGITS, "avg")
    torch.testing.assert_close(fused, torch.tensor([[4 / 3, 2.0, 5.8 / 3, 0.0]]))
    assert fused.argmax(-1).item() == 1  # two paraphrases agreeing on token 1 outvote one confident paraphrase


def test_max_is_the_max_of_softmax_probabilities():
    fused = fuse_logits(LOGITS, "max")
    expected = LOGITS.softmax(-1).amax(dim=1)
    torch.testing.assert_close(fused, expected.log())  # log-scores: softmax(fused) = expected, renormalised
    torch.testing.assert_close(fused.softmax(-1), expected / expected.sum(-1, keepdim=True))
    assert fused.argmax(-1).item() == 0  # the single most peaked distribution wins under max


def test_weighted_avg_normalises_the_weights():
    fused = fuse_logits(LOGITS, "weighted_avg", WEIGHTS)
    w = WEIGHTS / WEIGHTS.sum()
    expected = (w[0, :, None] * LOGITS[0]).sum(0, keepdim=True)
    torch.testing.assert_close(fused, expected)
    # scaling every weight by the same factor changes nothing: the weights are normalised
    torch.testing.assert_close(fuse_logits(LOGITS, "weighted_avg", WEIGHTS * 7), fused)
    assert fused.argmax(-1).item() == 0  # unlike plain avg: the confident paraphrase dominates


def test_weighted_max_takes_the_most_confident_paraphrase():
    fused = fuse_logits(LOGITS, "weighted_max", torch.tensor([[0.1, 0.8, 0.3]]))
    torch.testing.assert_close(fused, LOGITS[:, 1])


def test_rules_apply_per_group():
    two = torch.cat([LOGITS, LOGITS.flip(1)])  # [2, 3, 4]
    for method in ("avg", "max"):
        torch.testing.assert_close(fuse_logits(two, method)[0], fuse_logits(LOGITS, method)[0])
    w = torch.tensor([[0.9, 0.2, 0.1], [0.1, 0.2, 0.9]])
    fused = fuse_logits(two, "weighted_max", w)
    torch.testing.assert_close(fused[0], LOGITS[0, 0])
    torch.testing.assert_close(fused[1], LOGITS[0, 0])


@pytest.mark.parametrize("method", ["weighted_avg", "weighted_max"])
def test_weighted_without_weights_is_an_error(method):
    with pytest.raises(RuntimeError, match=method):
        fuse_logits(LOGITS, method, None)


def test_unknown_method_names_the_flag():
    with pytest.raises(ValueError, match="method"):
        fuse_logits(LOGITS, "median")


def test_token_logprob_is_the_fused_distribution():
    for method in ("avg", "max"):
        scores = fuse_logits(LOGITS, method)
        token = scores.argmax(-1)
        expected = scores.softmax(-1)[0, token].log()
        torch.testing.assert_close(token_logprob(scores, token), expected)




@pytest.mark.parametrize("method", ["avg", "max"])
def test_generation_carries_each_tokens_fused_probability(method, tiny_lm, template, groups):
    """The decoder records, per answer token, its log-probability under the fused distribution it was picked from."""
    from selfens_pl.engine.batches import prompt_batch
    from selfens_pl.heads import LogitFusion

    head, seen = LogitFusion(method), []

    def recording_fuse(logits, weights=None, valid=None):
        seen.append(head.fuse(logits, weights, valid))
        return seen[-1]

    dec, n = tiny_lm.decoder, len(groups[0]["paraphrases"])
    batch = prompt_batch(dec, tiny_lm.prompts(template), [(g, p) for g in groups for p in g["paraphrases"]], n)
    gens = dec.decode_n_tokens(batch, recording_fuse, recording_fuse)
    for g, gen in enumerate(gens):
        assert len(gen.logprobs) == len(gen.token_ids) > 0
        assert all(lp <= 0 for lp in gen.logprobs) and 0 < gen.mean_prob <= 1
        assert abs(gen.logprobs[0] - seen[0][g].log_softmax(-1)[gen.token_ids[0]].item()) < 1e-5


def test_prob_avg_is_the_log_of_the_mean_probability():
    fused = fuse_logits(VETO, "prob_avg")
    p = VETO.softmax(-1)
    torch.testing.assert_close(fused, ((p[0, 0] + p[0, 1]) / 2).log()[None])
    assert fused.exp().sum().item() == pytest.approx(1.0)  # already a distribution: a mixture
    # a mixture lets row 1's token 2 through although row 0 rules it out; the product of experts (avg) does not
    assert fused.argmax(-1).item() == 2
    assert fuse_logits(VETO, "avg").argmax(-1).item() == 0


def entropy_weighted_by_hand(rows: list[list[float]]) -> list[float]:
    """The rule written out with plain floats: a_i = softmax(-H_i), fused = sum_i a_i log p_i."""
    logps, entropies = [], []
    for row in rows:
        z = math.log(sum(math.exp(x) for x in row))
        logp = [x - z for x in row]
        logps.append(logp)
        entropies.append(-sum(math.exp(lp) * lp for lp in logp))
    e = [math.exp(-h) for h in entropies]
    a = [x / sum(e) for x in e]
    return [sum(a[i] * logps[i][t] for i in range(len(rows))) for t in range(len(rows[0]))]


def test_entropy_weighted_matches_the_rule_written_by_hand():
    fused = fuse_logits(LOGITS, "entropy_weighted")
    torch.testing.assert_close(fused, torch.tensor([entropy_weighted_by_hand(LOGITS[0].tolist())]))
    # the peaked row 0 (entropy 0.26 nats) outweighs two unsure rows (0.89 nats each) that agree with each other;
    # plain avg lets the two agreeing rows win
    assert fused.argmax(-1).item() == 0
    assert fuse_logits(LOGITS, "avg").argmax(-1).item() == 1


def test_entropy_weighted_with_equal_certainty_is_avg():
    """Rows of equal entropy weigh the same: the fused distribution is avg's (scores differ by a constant)."""
    rows = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 2.0, 1.0]]])  # permutations of each other: same entropy
    torch.testing.assert_close(fuse_logits(rows, "entropy_weighted").softmax(-1), fuse_logits(rows, "avg").softmax(-1))


def test_entropy_weights_are_per_group_and_per_call():
    two = torch.cat([LOGITS, LOGITS.flip(1)])
    fused = fuse_logits(two, "entropy_weighted")
    torch.testing.assert_close(fused[1], fused[0])  # row order within a group does not matter
    torch.testing.assert_close(fused[0], fuse_logits(LOGITS, "entropy_weighted")[0])


@pytest.mark.parametrize("method", RULES)
def test_padding_rows_never_count(method):
    """A ragged group padded to n rows fuses exactly as the unpadded group, whatever the padding rows hold."""
    junk = torch.tensor([[[0.0, 0.0, 0.0, 50.0]]])
    padded = torch.cat([LOGITS, junk], dim=1)
    valid = torch.tensor([[True, True, True, False]])
    w_padded = torch.cat([WEIGHTS, torch.tensor([[5.0]])], dim=1)
    torch.testing.assert_close(fuse_logits(padded, method, w_padded, valid), fuse_logits(LOGITS, method, WEIGHTS))


@pytest.mark.parametrize("method", RULES)
@pytest.mark.parametrize("floor", [0.0, 0.1, 1.0])
def test_calibrated_with_a_zero_prior_is_the_uncalibrated_rule(method, floor):
    """Must-show: a content-free prior of all zeros changes nothing, for every rule and floor (one prior per row,
    or one shared by the group)."""
    plain = fuse_logits(LOGITS, method, WEIGHTS)
    for prior in (torch.zeros_like(LOGITS), torch.zeros(1, 1, 4)):
        calibrated = fuse_logits(LOGITS, method, WEIGHTS, prior=prior, prior_floor=floor)
        assert torch.equal(calibrated, plain)


@pytest.mark.parametrize("method", ["avg", "prob_avg", "max", "entropy_weighted"])
def test_calibrated_is_the_rule_on_logits_minus_the_prior(method):
    prior = torch.tensor([[[-0.1, -3.0, -2.5, -5.0]]]).log_softmax(-1).expand(1, 3, 4)
    torch.testing.assert_close(fuse_logits(LOGITS, method, prior=prior), fuse_logits(LOGITS - prior, method))


def test_calibration_demotes_the_answer_the_template_favours():
    """Both paraphrases lean to token 0, and so do their content-free prompts (the template's answer, as
    'saxophone' for every '[X] became known as a [MASK] player.'); calibration lets token 1 through."""
    logits = torch.tensor([[[2.0, 1.5, -1.0, -1.0], [2.0, 1.2, -1.0, -1.0]]])
    prior = torch.tensor([[[3.0, 0.0, 0.0, 0.0]]]).log_softmax(-1)
    assert fuse_logits(logits, "avg").argmax(-1).item() == 0
    assert fuse_logits(logits, "avg", prior=prior).argmax(-1).item() == 1
    # a per-paraphrase prior [g, n, V] equal for both rows is the shared prior [g, 1, V]
    torch.testing.assert_close(fuse_logits(logits, "avg", prior=prior.expand(1, 2, 4)),
                               fuse_logits(logits, "avg", prior=prior))


def test_prior_floor_stops_ruled_out_tokens_from_winning():
    """Zhao et al.'s plain division (floor 0) lifts a token the content-free prompt rules out (q ~ e^-20) above the
    answer; floored at 0.1 of the content-free top probability it stays where the paraphrases put it."""
    logits = torch.tensor([[[5.0, 3.0, -4.0]]])
    prior = torch.tensor([[[0.0, 0.0, -20.0]]]).log_softmax(-1)
    assert fuse_logits(logits, "avg", prior=prior, prior_floor=0.0).argmax(-1).item() == 2
    assert fuse_logits(logits, "avg", prior=prior, prior_floor=0.1).argmax(-1).item() == 0
    floored = torch.maximum(prior, prior.amax(-1, keepdim=True) + math.log(0.1))
    torch.testing.assert_close(fuse_logits(logits, "avg", prior=prior, prior_floor=0.1), (logits - floored)[:, 0])
    # floor 1: every token is floored to the top: calibration is off (the fused distribution is the plain one)
    torch.testing.assert_close(fuse_logits(logits, "avg", prior=prior, prior_floor=1.0).softmax(-1),
                               fuse_logits(logits, "avg").softmax(-1))


def test_prior_of_the_wrong_shape_is_an_error():
    with pytest.raises(RuntimeError, match="prior"):
        fuse_logits(LOGITS, "avg", prior=torch.zeros(1, 2, 4))


@pytest.mark.parametrize("method", ["prob_avg", "entropy_weighted"])
def test_new_rules_give_log_scores(method):
    scores = fuse_logits(LOGITS, method)
    token = scores.argmax(-1)
    torch.testing.assert_close(token_logprob(scores, token), scores.softmax(-1)[0, token].log())


@pytest.mark.parametrize("method", ["prob_avg", "entropy_weighted"])
def test_new_rules_with_one_paraphrase_are_that_paraphrase(method):
    one = LOGITS[:, :1]
    torch.testing.assert_close(fuse_logits(one, method).softmax(-1), one[:, 0].softmax(-1))


def test_new_rules_compile_without_graph_breaks():
    """Pure tensor code: the rules trace into one graph (what the compiled decode step needs)."""
    for method in ("prob_avg", "entropy_weighted"):
        compiled = torch.compile(lambda x, v, p: fuse_logits(x, method, None, v, p, 0.1), fullgraph=True,
                                 backend="eager")
        valid = torch.tensor([[True, True, False]])
        prior = torch.zeros(1, 3, 4)
        torch.testing.assert_close(compiled(LOGITS, valid, prior), fuse_logits(LOGITS, method, None, valid, prior, 0.1))
