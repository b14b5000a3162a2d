"""CascadeHead: threshold 0 is its first stage alone, above 1 the ensemble alone, token for token; in between each
group's answer is one of the two, and the records count the decoded rows."""

from __future__ import annotations

import pytest
from test_demos import with_blocks

from selfens_pl.heads import CascadeHead, FlexFusion, LogitFusion, OriginHead, RerankHead, VoteHead
from selfens_pl.heads.cascade import cheap_members


def gens(records):
    return [r["generation"] for r in records]


def test_threshold_zero_with_one_cheap_member_is_origin(tiny_lm, template, groups):
    prompts = tiny_lm.prompts(template)
    cascade = CascadeHead(first=1, confidence="mean_prob", threshold=0.0).generate(tiny_lm.decoder, prompts, groups)
    assert gens(cascade) == gens(OriginHead().generate(tiny_lm.decoder, prompts, groups))
    assert all(r["path"] == "first" and r["decoded_rows"] == 1 for r in cascade)


def test_threshold_zero_with_three_cheap_members_is_their_vote(tiny_lm, template, groups):
    prompts = tiny_lm.prompts(template)
    cascade = CascadeHead(first=3, threshold=0.0).generate(tiny_lm.decoder, prompts, groups)
    vote = VoteHead().generate(tiny_lm.decoder, prompts, [dict(g, paraphrases=g["paraphrases"][:3]) for g in groups])
    assert gens(cascade) == gens(vote)
    assert [r["agreement"] for r in cascade] == [r["agreement"] for r in vote]


@pytest.mark.parametrize("make", [RerankHead, VoteHead, lambda: LogitFusion("prob_avg"),
                                  lambda: FlexFusion(layout="shared_prefix", backend="dense")])
def test_threshold_above_one_is_the_ensemble(make, tiny_lm, template, groups):
    prompts = tiny_lm.prompts(template)
    cascade = CascadeHead(ensemble=make(), first=2, threshold=1.01).generate(tiny_lm.decoder, prompts, groups)
    ensemble = make().generate(tiny_lm.decoder, prompts, groups)
    assert gens(cascade) == gens(ensemble)
    assert all(r["path"] == "ensemble" for r in cascade)
    reuses = isinstance(make(), (RerankHead, VoteHead))
    expected = [len(g["paraphrases"]) + (0 if reuses else 2) if not isinstance(make(), FlexFusion) else 3
                for g in groups]
    assert [r["decoded_rows"] for r in cascade] == expected


def test_with_blocks_the_cheap_members_differ_in_block_and_the_ensemble_reuses_them(tiny_lm, template, groups):
    data = with_blocks(groups)  # 3 paraphrases x 3 blocks
    assert cheap_members(data[0], 3) == [0, 4, 8]  # paraphrase j with block j
    one = with_blocks([dict(g, paraphrases=g["paraphrases"][:1]) for g in groups])[0]  # K = 1, M = 3
    assert cheap_members(one, 3) == [0, 1, 2]  # paraphrase 0 with each block
    two = with_blocks([dict(g, paraphrases=g["paraphrases"][:2]) for g in groups])[0]  # K = 2, M = 3
    assert cheap_members(two, 6) == [0, 3, 2, 5, 4, 1] and cheap_members(two, 2) == [0, 3]
    prompts = tiny_lm.prompts(template)
    cascade = CascadeHead(first=3, threshold=1.01).generate(tiny_lm.decoder, prompts, data)
    assert gens(cascade) == gens(RerankHead().generate(tiny_lm.decoder, prompts, data))
    assert all(r["decoded_rows"] == 9 for r in cascade)


def test_each_group_takes_the_path_its_confidence_says(tiny_lm, template, groups):
    prompts = tiny_lm.prompts(template)
    first = CascadeHead(first=2, threshold=0.0).generate(tiny_lm.decoder, prompts, groups)
    full = RerankHead().generate(tiny_lm.decoder, prompts, groups)
    mixed = CascadeHead(first=2, threshold=0.75).generate(tiny_lm.decoder, prompts, groups)
    for rec, a, b in zip(mixed, first, full):
        want = a if rec["cascade_confidence"] >= 0.75 else b
        assert rec["generation"] == want["generation"]
        assert rec["path"] == ("first" if rec["cascade_confidence"] >= 0.75 else "ensemble")
        assert rec["method"] == "cascade"


def test_cascade_errors():
    with pytest.raises(ValueError, match="agreement needs first >= 2"):
        CascadeHead(first=1)
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        CascadeHead(threshold=-1)
    with pytest.raises(ValueError, match="another cascade"):
        CascadeHead(ensemble=CascadeHead())


def test_an_ensemble_answering_one_record_per_member_is_refused():
    """PerPromptHead answers K x M records per group: escalated groups would be handed its per-member records in
    turn (``zip(escalate, out)``), the wrong group's answers."""
    from selfens_pl.errors import UserError
    from selfens_pl.heads import PerPromptHead
    from selfens_pl.heads.cascade import one_record_per_group

    with pytest.raises(UserError, match=r"--model\.head\.init_args\.ensemble.*one record per group"):
        CascadeHead(ensemble=PerPromptHead())
    assert not one_record_per_group(PerPromptHead()) and one_record_per_group(VoteHead())
