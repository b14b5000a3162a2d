"""Each LogitFusion rule on hand-made logits (the seed's semantics)."""

from __future__ import annotations

import pytest
import torch

from selfens_pl.fusion import fuse_logits

# one group, three paraphrases, vocabulary of four tokens
LOGITS = torch.tensor([[[4.0, 0.0, 0.0, 0.0],
                        [0.0, 3.0, 2.9, 0.0],
                        [0.0, 3.0, 2.9, 0.0]]])
WEIGHTS = torch.tensor([[0.9, 0.2, 0.1]])


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
    with pytest.raises(ValueError, match=method):
        fuse_logits(LOGITS, method, None)


def test_unknown_method_names_the_flag():
    with pytest.raises(ValueError, match="method"):
        fuse_logits(LOGITS, "median")


@pytest.mark.parametrize("method", ["avg", "max", "weighted_avg", "weighted_max"])
def test_padding_rows_never_count(method):
    """A ragged group padded to n rows fuses exactly as the unpadded group, whatever the padding rows hold."""
    junk = torch.tensor([[[0.0, 0.0, 0.0, 50.0]]])  # a padding row that would win any rule if it counted
    padded = torch.cat([LOGITS, junk], dim=1)  # [1, 4, 4]
    valid = torch.tensor([[True, True, True, False]])
    w, w_padded = WEIGHTS, torch.cat([WEIGHTS, torch.tensor([[5.0]])], dim=1)
    torch.testing.assert_close(fuse_logits(padded, method, w_padded, valid), fuse_logits(LOGITS, method, w))


def test_token_logprob_is_the_fused_distribution():
    from selfens_pl.fusion import token_logprob

    for method in ("avg", "max"):
        scores = fuse_logits(LOGITS, method)
        token = scores.argmax(-1)
        expected = scores.softmax(-1)[0, token].log()
        torch.testing.assert_close(token_logprob(scores, token), expected)




@pytest.mark.parametrize("method", ["avg", "max"])
def test_generation_carries_each_tokens_fused_probability(method, tiny_lm, template, groups):
    """The decoder records, per answer token, its log-probability under the fused distribution it was picked from."""
    from selfens_pl.heads import LogitFusion
    from selfens_pl.heads.base import prompt_batch

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
