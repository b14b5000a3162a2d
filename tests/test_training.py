"""Fine-tuning loss with the inference layout: equivalences with plain teacher forcing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfens_pl.data.prompts import PromptTokenizer
from selfens_pl.errors import UserError
from selfens_pl.heads import (CascadeHead, FlexFusion, FusionHead, LogitFusion, OriginHead, PerPromptHead, RerankHead,
                              VoteHead)
from selfens_pl.lit.training import answer_ids, answer_loss


@pytest.fixture
def prompts(tiny_lm, template):
    return PromptTokenizer(tiny_lm.tokenizer, template)


def teacher_forced(lm, prompts, groups, index=0):
    """Reference: HF forward on prompt + answer, mean CE over every answer token of every group."""
    losses = []
    for g in groups:
        prompt = prompts.prompt_ids(g["paraphrases"][index])
        ans = answer_ids(lm.tokenizer, g, "\n")
        logits = lm.lm(input_ids=torch.tensor([prompt + ans])).logits[0, len(prompt) - 1: -1]
        losses.append(F.cross_entropy(logits, torch.tensor(ans), reduction="none"))
    return torch.cat(losses).mean()


def test_origin_loss_equals_teacher_forcing(tiny_lm, prompts, groups):
    loss = answer_loss(tiny_lm.lm, tiny_lm.tokenizer, OriginHead(), prompts, groups, "\n")
    torch.testing.assert_close(loss, teacher_forced(tiny_lm, prompts, groups), atol=1e-4, rtol=1e-4)
    loss.backward()  # differentiable through the dense mask
    assert tiny_lm.lm.model.embed_tokens.weight.grad is not None
    tiny_lm.lm.zero_grad(set_to_none=True)


def test_fused_losses_with_one_paraphrase_equal_origin(tiny_lm, prompts, groups):
    single = [dict(g, paraphrases=g["paraphrases"][:1]) for g in groups]
    reference = answer_loss(tiny_lm.lm, tiny_lm.tokenizer, OriginHead(), prompts, single, "\n").detach()
    heads = [FlexFusion(layout="concat"), FlexFusion(layout="shared_prefix"), LogitFusion("avg"),
             PerPromptHead()]
    for head in heads:
        with torch.no_grad():
            loss = answer_loss(tiny_lm.lm, tiny_lm.tokenizer, head, prompts, single, "\n")
        torch.testing.assert_close(loss, reference, atol=1e-4, rtol=1e-4, msg=head.method)


def test_logit_fusion_of_identical_paraphrases_trains_like_origin(tiny_lm, prompts, groups):
    same = [dict(g, paraphrases=[g["paraphrases"][0]] * 3) for g in groups]
    with torch.no_grad():
        reference = answer_loss(tiny_lm.lm, tiny_lm.tokenizer, OriginHead(), prompts, same, "\n")
        for method in ("avg", "max"):
            loss = answer_loss(tiny_lm.lm, tiny_lm.tokenizer, LogitFusion(method), prompts, same, "\n")
            torch.testing.assert_close(loss, reference, atol=1e-4, rtol=1e-4, msg=method)


def test_fused_loss_differs_from_single_paraphrase(tiny_lm, prompts, groups):
    """Control: with real paraphrases the fused loss is not the origin loss."""
    with torch.no_grad():
        origin = answer_loss(tiny_lm.lm, tiny_lm.tokenizer, OriginHead(), prompts, groups, "\n")
        fused = answer_loss(tiny_lm.lm, tiny_lm.tokenizer, FlexFusion(layout="shared_prefix"), prompts, groups, "\n")
    assert not torch.allclose(origin, fused, atol=1e-3)


def test_missing_answers_names_the_record(tiny_lm, prompts, groups):
    bad = [dict(groups[0], answers=[])]
    with pytest.raises(ValueError, match=groups[0]["id"]):
        answer_loss(tiny_lm.lm, tiny_lm.tokenizer, OriginHead(), prompts, bad, "\n")


def test_few_shot_blocks_are_refused_naming_the_flag(tiny_lm, prompts, groups):
    from selfens_pl.heads import LogitFusion
    from selfens_pl.lit.training import answer_loss

    blocked = [dict(g, blocks=[[{"question": "q?", "answer": "a"}]]) for g in groups]
    with pytest.raises(ValueError, match="--data.demo_blocks > 1 is not supported"):
        answer_loss(tiny_lm.lm, tiny_lm.tokenizer, LogitFusion("avg"), prompts, blocked, None)


class FutureHead(FusionHead):
    """A head added later that does not say what fine-tuning it would train."""

    method = "future"


@pytest.mark.parametrize("head", [VoteHead(), RerankHead(), CascadeHead(first=2), FutureHead()],
                         ids=lambda h: h.method)
def test_heads_without_a_training_loss_are_refused_naming_the_flag(tiny_lm, prompts, groups, head):
    """vote, rerank and cascade pick among answers; no loss of theirs exists, so fit must not train another head's."""
    with pytest.raises(UserError, match=r"--model\.head=.*PerPromptHead"):
        answer_loss(tiny_lm.lm, tiny_lm.tokenizer, head, prompts, groups, "\n")


def test_each_training_loss_is_the_heads_own(tiny_lm, prompts, groups):
    """Dispatch is by ``training_loss``: per_prompt trains every paraphrase, origin only the first."""
    with torch.no_grad():
        origin = answer_loss(tiny_lm.lm, tiny_lm.tokenizer, OriginHead(), prompts, groups, "\n")
        members = answer_loss(tiny_lm.lm, tiny_lm.tokenizer, PerPromptHead(), prompts, groups, "\n")
        rest = [dict(g, paraphrases=g["paraphrases"][i:i + 1]) for g in groups for i in range(3)]
        by_row = answer_loss(tiny_lm.lm, tiny_lm.tokenizer, OriginHead(), prompts, rest, "\n")
    torch.testing.assert_close(members, by_row, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(origin, members, atol=1e-3)
