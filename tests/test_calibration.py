"""Contextual calibration: content-free prompts (MyriadLAMA subject, WebQA question) and the calibrated heads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from selfens_pl.data.content_free import PLACEHOLDER, content_free_prompts, recover_subject
from selfens_pl.data.prompts import MYRIADLAMA_FEW_SHOT, MYRIADLAMA_INSTRUCTION, PromptTemplate
from selfens_pl.engine.fusion import fuse_logits
from selfens_pl.heads import FlexFusion, LogitFusion

FIXTURES = Path(__file__).parent / "fixtures"
REAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "myriadlama" / "dev.jsonl"

FACTS = [
    {"id": "f1", "subject": "France", "answers": ["Paris"],
     "paraphrases": ["The capital of France is [MASK].", "Which city is the capital of France? [MASK]."]},
    {"id": "f2", "subject": "Ada Lovelace", "answers": ["London"],
     "paraphrases": ["Ada Lovelace was born in [MASK].", "The birthplace of Ada Lovelace is [MASK].",
                     "[MASK] is where Ada Lovelace was born."]},
    {"id": "f3", "subject": "Kyoto", "answers": ["Japan"], "paraphrases": ["Kyoto is located in [MASK]."]},
]


@pytest.fixture
def lama_template() -> PromptTemplate:
    return PromptTemplate(MYRIADLAMA_INSTRUCTION, MYRIADLAMA_FEW_SHOT[:2])


# -- content-free prompts -----------------------------------------------------------------------------------------
def test_subject_is_replaced_by_the_placeholder_in_every_paraphrase():
    assert content_free_prompts(FACTS[1], "subject") == [
        "N/A was born in [MASK].", "The birthplace of N/A is [MASK].", "[MASK] is where N/A was born."]
    assert content_free_prompts(FACTS[1], "question") == [PLACEHOLDER]  # one prompt for the group


def test_subject_that_cannot_be_used_is_an_error_naming_the_record():
    with pytest.raises(ValueError, match="record 'w1'.*calibration=question"):
        content_free_prompts({"id": "w1", "paraphrases": ["who is the president?"]}, "subject")
    with pytest.raises(ValueError, match="record 'f1': paraphrase 1 .* does not contain the subject 'France'"):
        content_free_prompts({"id": "f1", "subject": "France",
                              "paraphrases": ["The capital of France is [MASK].", "Where do the French govern?"]},
                             "subject")
    # a whole-word match only: "France" is not inside "Frances"
    with pytest.raises(ValueError, match="does not contain"):
        content_free_prompts({"id": "x", "subject": "France", "paraphrases": ["Frances was born in [MASK]."]},
                             "subject")


def test_recover_subject_rules():
    assert recover_subject(["[MASK] is the capital of Peru.", "Peru is governed from [MASK]."]) == "Peru"
    # the documented weakness: a content word common to every paraphrase and longer than the subject wins
    assert recover_subject(["[MASK] is the capital of Peru.", "Peru's capital is [MASK]."]) == "capital"
    # whole words only ("diploma" is not taken from "diplomatic"), never the [MASK] placeholder
    assert recover_subject(["Which country has diplomatic ties with Rwanda? [MASK].",
                            "Rwanda and [MASK] have diplomatic relations.",
                            "[MASK] maintains a diploma course in Rwanda."]) == "Rwanda"
    assert recover_subject(["Tree is a kind of [MASK].", "[MASK] is what a tree is."]) is None  # case differs
    assert recover_subject(["Ledisi was awarded as a great [MASK].", "Ledisi is a [MASK] by profession."]) == "Ledisi"
    assert recover_subject(["one sentence about [MASK]."]) is None  # one paraphrase is common to itself
    assert recover_subject(["alpha [MASK].", "beta [MASK]."]) is None  # nothing but the mask in common


def test_recovered_subject_is_the_hub_rows_sub_ent():
    """On the fixture's hub rows the subject is known (sub_ent); recovery from the paraphrases finds the same."""
    from selfens_pl.data.sources import group_myriadlama, load_myriadlama_rows

    facts = group_myriadlama(load_myriadlama_rows(str(FIXTURES / "myriadlama_rows_tiny.jsonl")))
    checked = 0
    for fact in facts:
        texts = fact["manual_paraphrases"] + fact["auto_paraphrases"]
        if len(set(texts)) >= 2:
            assert recover_subject(texts) == fact["subject"]
            checked += 1
    assert checked >= 2


def test_myriadlama_groups_carry_the_subject():
    """Hub rows give sub_ent, also when only one paraphrase is asked (a grouped file recovers it from all of a
    fact's paraphrases, manual and automatic: the shared dev split's test below)."""
    from selfens_pl.data.datamodule import ParaphraseDataModule

    rows = ParaphraseDataModule(path=str(FIXTURES / "myriadlama_rows_tiny.jsonl"), source="myriadlama",
                                task="myriadlama", num_manual=1, test_size=3)
    rows.setup()
    assert {g["id"]: g["subject"] for g in rows.groups} == {"f1": "France", "f2": "Ada Lovelace", "f3": "Kyoto"}


@pytest.mark.skipif(not REAL_DEV.is_file(), reason="shared MyriadLAMA dev split not available")
def test_every_shipped_fact_gets_its_subject_recovered():
    """On the real dev split (a grouped file: no sub_ent) the rule recovers a subject for every fact."""
    from selfens_pl.data.datamodule import ParaphraseDataModule

    dm = ParaphraseDataModule(path=str(REAL_DEV), source="myriadlama", task="myriadlama", num_manual=1)
    dm.setup()
    recovered = [g for g in dm.groups if g["subject"]]
    assert len(recovered) == len(dm.groups) == 200
    first = json.loads(REAL_DEV.read_text().splitlines()[0])
    assert dm.groups[0]["id"] == first["uuid"] and dm.groups[0]["subject"] == "electrolyte"


# -- calibrated heads ---------------------------------------------------------------------------------------------
def reference_calibrated(tiny_lm, prompts, group, method, mode, floor) -> str:
    """Greedy decoding written out with full forward passes (no cache, one prompt at a time): every paraphrase
    and content-free prompt re-encoded with the answer so far, fused with the calibrated rule."""
    model, dec = tiny_lm.lm, tiny_lm.decoder
    rows = [prompts.prompt_ids(p) for p in group["paraphrases"]]
    free = [prompts.prompt_ids(p) for p in content_free_prompts(group, mode)]
    answer: list[int] = []
    with torch.no_grad():
        for _ in range(dec.max_new_tokens):
            logits = torch.stack([model(torch.tensor([r + answer])).logits[0, -1].float() for r in rows])
            prior = torch.stack([model(torch.tensor([r + answer])).logits[0, -1].float().log_softmax(-1)
                                 for r in free])
            token = int(fuse_logits(logits[None], method, prior=prior[None], prior_floor=floor).argmax(-1))
            if token in dec.eos_ids:
                break
            answer.append(token)
    return dec.tokenizer.decode(answer, skip_special_tokens=True)


@pytest.mark.parametrize("method,mode,floor", [("avg", "subject", 0.1), ("prob_avg", "question", 0.1),
                                               ("entropy_weighted", "subject", 0.0), ("max", "question", 0.5)])
def test_calibrated_logit_fusion_equals_the_uncached_reference(method, mode, floor, tiny_lm, lama_template):
    """The content-free rows ride in the same cached batch, are fed the fused token, and are split off again:
    token for token the same as re-encoding every prompt at every step."""
    prompts = tiny_lm.prompts(lama_template)
    head = LogitFusion(method, calibration=mode, prior_floor=floor)
    records = head.generate(tiny_lm.decoder, prompts, FACTS)
    for rec, group in zip(records, FACTS):
        assert rec["generation"] == reference_calibrated(tiny_lm, prompts, group, method, mode, floor)
        assert rec["method"] == f"calibrated_{method}"


def test_calibration_changes_answers(tiny_lm, lama_template):
    """Not a no-op on a real model: some step's fused distribution moves (the test fails if the prior is ignored)."""
    prompts = tiny_lm.prompts(lama_template)
    plain = LogitFusion("avg").generate(tiny_lm.decoder, prompts, FACTS)
    calibrated = LogitFusion("avg", calibration="subject", prior_floor=0.0).generate(tiny_lm.decoder, prompts, FACTS)
    assert [r["generation"] for r in plain] != [r["generation"] for r in calibrated]


def test_uniform_content_free_rows_leave_the_rule_unchanged():
    """The head's split: content-free rows with constant logits (a uniform prior) fuse exactly as no calibration."""
    logits = torch.randn(2, 3, 11)
    for mode, m in (("subject", 3), ("question", 1)):
        head = LogitFusion("prob_avg", calibration=mode)
        rows = torch.cat([logits, torch.zeros(2, m, 11)], dim=1)
        torch.testing.assert_close(head.fuse(rows).softmax(-1), fuse_logits(logits, "prob_avg").softmax(-1))


@pytest.mark.parametrize("head", [lambda: LogitFusion("avg", calibration="subject"),
                                  lambda: LogitFusion("entropy_weighted", calibration="question"),
                                  lambda: FlexFusion(layout="shared_prefix", backend="dense", calibration="subject")])
def test_calibrated_ragged_batch_equals_each_group_alone(head, tiny_lm, lama_template):
    prompts = tiny_lm.prompts(lama_template)
    batched = head().generate(tiny_lm.decoder, prompts, FACTS)  # sizes 2, 3, 1
    alone = [head().generate(tiny_lm.decoder, prompts, [g])[0] for g in FACTS]
    assert [r["generation"] for r in batched] == [r["generation"] for r in alone]


def test_flex_calibrated_first_token_is_logit_fusions(tiny_lm, lama_template):
    """Aligned FlexFusion encodes each paraphrase as if alone, so its calibrated first token equals LogitFusion's."""
    prompts = tiny_lm.prompts(lama_template)
    seen = {}
    flex = FlexFusion(layout="shared_prefix", backend="dense", fusion="prob_avg", calibration="subject")
    logit = LogitFusion("prob_avg", calibration="subject")
    inner_flex, inner_logit = flex.fuse_first, logit.fuse

    def rec_flex(logits, weights=None, valid=None, prior=None):
        seen.setdefault("flex", inner_flex(logits, weights, valid, prior))
        return seen["flex"]

    def rec_logit(logits, weights=None, valid=None):
        seen.setdefault("logit", inner_logit(logits, weights, valid))
        return seen["logit"]

    flex.fuse_first, logit.fuse = rec_flex, rec_logit
    flex.generate(tiny_lm.decoder, prompts, FACTS)
    logit.generate(tiny_lm.decoder, prompts, FACTS)
    torch.testing.assert_close(seen["flex"], seen["logit"], atol=1e-4, rtol=1e-4)


def test_calibration_flags_are_checked():
    with pytest.raises(ValueError, match="calibration='label'"):
        LogitFusion("avg", calibration="label")
    with pytest.raises(ValueError, match="prior_floor"):
        LogitFusion("avg", calibration="subject", prior_floor=2.0)
    with pytest.raises(ValueError, match="first_token=fused"):
        FlexFusion(first_token="last_segment", calibration="question")


def test_calibrated_head_without_a_subject_names_the_record(tiny_lm, lama_template):
    group = {"id": "webqa-7", "paraphrases": ["who wrote hamlet?"], "answers": ["Shakespeare"]}
    with pytest.raises(ValueError, match="record 'webqa-7'"):
        LogitFusion("avg", calibration="subject").generate(tiny_lm.decoder, tiny_lm.prompts(lama_template), [group])


def test_fine_tuning_a_calibrated_head_is_refused(tiny_lm, lama_template):
    from selfens_pl.lit.training import answer_loss

    with pytest.raises(ValueError, match="calibration='subject'"):
        answer_loss(tiny_lm.lm, tiny_lm.tokenizer, LogitFusion("avg", calibration="subject"),
                    tiny_lm.prompts(lama_template), FACTS[:1], None)
