"""Groups of unequal size (e.g. what ``paraphrase`` writes after its quality checks) through every fused head.

A ragged group is padded to the batch's largest group and the padding never counts, so its answer is exactly the
answer it gets alone, or in a batch of groups of its own size.
"""

from __future__ import annotations

import pytest
import torch

from selfens_pl.heads import FlexFusion, LogitFusion, OriginHead, PerPromptHead, VoteHead

FUSED = {
    "avg": lambda: LogitFusion("avg"),
    "max": lambda: LogitFusion("max"),
    "weighted_avg": lambda: LogitFusion("weighted_avg"),
    "weighted_max": lambda: LogitFusion("weighted_max"),
    "prob_avg": lambda: LogitFusion("prob_avg"),
    "entropy_weighted": lambda: LogitFusion("entropy_weighted"),
    "calibrated_avg": lambda: LogitFusion("avg", calibration="question"),
    "calibrated_prob_avg": lambda: LogitFusion("prob_avg", calibration="question"),
    "flex_concat": lambda: FlexFusion(layout="concat", backend="dense"),
    "flex_shared_prefix": lambda: FlexFusion(layout="shared_prefix", backend="dense"),
    "flex_shared_prefix_max": lambda: FlexFusion(layout="shared_prefix", fusion="max", backend="dense"),
    "flex_last_segment": lambda: FlexFusion(layout="shared_prefix", first_token="last_segment", backend="dense"),
    "flex_calibrated": lambda: FlexFusion(layout="shared_prefix", backend="dense", calibration="question"),
}


def ragged(groups: list[dict]) -> list[dict]:
    """Sizes 3, 1, 2, with confidences for the weighted rules."""
    sizes = [3, 1, 2]
    return [dict(g, paraphrases=g["paraphrases"][:k], confidences=[0.9, 0.3, 0.6][:k])
            for g, k in zip(groups, sizes)]


@pytest.mark.parametrize("name", FUSED)
def test_ragged_batch_equals_each_group_alone(name, tiny_lm, template, groups):
    head = FUSED[name]()
    prompts = tiny_lm.prompts(template)
    data = ragged(groups)
    batched = head.generate(tiny_lm.decoder, prompts, data)
    alone = [head.generate(tiny_lm.decoder, prompts, [g])[0] for g in data]
    assert [r["generation"] for r in batched] == [r["generation"] for r in alone]
    assert [r["paraphrases"] for r in batched] == [g["paraphrases"] for g in data]  # padding is never reported


def first_scores(head, tiny_lm, template, data) -> list:
    """The fused first-token log-scores of each group (recorded from the head's fusion function)."""
    attr = "fuse_first" if isinstance(head, FlexFusion) else "fuse"
    inner, seen = getattr(head, attr), []

    def recording(logits, *args):
        out = inner(logits, *args)
        seen.append(out)
        return out

    setattr(head, attr, recording)
    head.generate(tiny_lm.decoder, tiny_lm.prompts(template), data)
    return list(seen[0])


@pytest.mark.parametrize("name", FUSED)
def test_padding_rows_do_not_change_the_fused_distribution(name, tiny_lm, template, groups):
    """Logits, not just tokens: group sizes 3, 1, 2 in one batch fuse exactly as each group alone."""
    data = ragged(groups)
    batched = first_scores(FUSED[name](), tiny_lm, template, data)
    for i, g in enumerate(data):
        alone = first_scores(FUSED[name](), tiny_lm, template, [g])[0]
        torch.testing.assert_close(batched[i], alone, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["avg", "flex_shared_prefix"])
def test_single_paraphrase_group_in_a_ragged_batch_equals_origin(name, tiny_lm, template, groups):
    prompts = tiny_lm.prompts(template)
    data = ragged(groups)
    fused = FUSED[name]().generate(tiny_lm.decoder, prompts, data)
    origin = OriginHead().generate(tiny_lm.decoder, prompts, [data[1]])
    assert fused[1]["generation"] == origin[0]["generation"]


def test_per_prompt_and_origin_take_ragged_groups(tiny_lm, template, groups):
    prompts = tiny_lm.prompts(template)
    data = ragged(groups)
    assert len(PerPromptHead().generate(tiny_lm.decoder, prompts, data)) == 6
    assert len(OriginHead().generate(tiny_lm.decoder, prompts, data)) == 3


def test_vote_takes_ragged_groups(tiny_lm, template, groups):
    """A vote over 3, 1 and 2 answers: each group's record is the one it gets alone, its agreement over its own
    paraphrases only."""
    prompts = tiny_lm.prompts(template)
    data = ragged(groups)
    batched = VoteHead().generate(tiny_lm.decoder, prompts, data)
    alone = [VoteHead().generate(tiny_lm.decoder, prompts, [g])[0] for g in data]
    # the same records; mean_prob (a float over another batch composition) to float precision
    assert [{k: v for k, v in r.items() if k != "mean_prob"} for r in batched] == \
        [{k: v for k, v in r.items() if k != "mean_prob"} for r in alone]
    assert [r["mean_prob"] for r in batched] == pytest.approx([r["mean_prob"] for r in alone], rel=1e-4)
    assert [len(r["paraphrase_predictions"]) for r in batched] == [3, 1, 2]
    assert batched[1]["voted_index"] == 0 and batched[1]["agreement"] == 1.0
