"""Demonstration blocks as an ensemble dimension (:mod:`selfens_pl.data.demos`): the draw, the data module, the decoder's
several shared prefixes, and every member-decoding head with blocks."""

from __future__ import annotations

import pytest
import torch
from conftest import SHARED

from selfens_pl.data.datamodule import ParaphraseDataModule
from selfens_pl.data.demos import attach_blocks, cut_blocks, draw_blocks, load_pool, members
from selfens_pl.engine.batches import prompt_batch, rows_batch
from selfens_pl.engine.fusion import no_fusion
from selfens_pl.heads import LogitFusion, OriginHead, PerPromptHead, RerankHead, VoteHead

FIXTURE = "tests/fixtures/myriadlama_grouped_tiny.jsonl"
DEV = str(SHARED / "myriadlama" / "dev.jsonl")


def pool_of(n: int) -> list[dict]:
    return [{"id": f"f{i}", "question": f"question number {i}?", "answer": f"a{i}"} for i in range(n)]


def test_blocks_are_deterministic_disjoint_and_never_hold_the_groups_own_fact():
    pool = pool_of(40)
    group = {"id": "f3", "paraphrases": ["Question number 7?", "something else"]}
    blocks = draw_blocks(group, pool, 4, 5)
    assert len(blocks) == 3 and all(len(b) == 5 for b in blocks)
    shown = [e["question"] for b in blocks for e in b]
    assert len(set(shown)) == 15  # no demonstration twice in a group
    assert "question number 3?" not in shown  # its own id
    assert "question number 7?" not in shown  # its own question, up to case
    assert draw_blocks(group, pool, 4, 5) == blocks  # the same in every run
    assert draw_blocks(group, pool, 2, 5) == blocks[:1]  # block b does not depend on M
    other = draw_blocks({"id": "f4", "paraphrases": ["x"]}, pool, 4, 5)
    assert other != blocks  # seeded by the group id


def test_a_pool_too_small_is_one_error_naming_the_record():
    with pytest.raises(ValueError, match=r"record 'f1'.*demo_blocks=3 needs 10"):
        draw_blocks({"id": "f1", "paraphrases": ["q"]}, pool_of(8), 3, 5)


def test_myriadlama_pool_is_sorted_by_fact_and_takes_a_manual_paraphrase_and_the_first_answer():
    pool = load_pool([FIXTURE, FIXTURE], "myriadlama")
    assert [d["id"] for d in pool] == sorted(d["id"] for d in pool) and len(pool) == 3  # duplicates merged
    import json
    facts = {f["uuid"]: f for f in map(json.loads, open(FIXTURE))}
    for d in pool:
        assert d["question"] in facts[d["id"]]["manual_paraphrases"]
        assert d["answer"] == facts[d["id"]]["answers"][0]


def test_data_module_attaches_blocks_that_never_show_the_facts_own_demonstration():
    dm = ParaphraseDataModule(path=DEV, source="myriadlama", task="myriadlama", num_manual=3, limit=30,
                              demo_blocks=3, few_shot_pool=DEV)
    dm.setup()
    pool = {d["question"]: d["id"] for d in load_pool(DEV, "myriadlama")}
    for g in dm.groups:
        assert len(g["blocks"]) == 2 and all(len(b) == len(dm.template.few_shot) for b in g["blocks"])
        assert all(pool[e["question"]] != g["id"] for b in g["blocks"] for e in b)
        assert len(members(g)) == 9 and members(g)[:3] == members(cut_blocks(g, 1))


def test_demo_blocks_without_a_pool_names_the_flag():
    dm = ParaphraseDataModule(path=FIXTURE, source="myriadlama", task="myriadlama", demo_blocks=2)
    with pytest.raises(ValueError, match="--data.demo_blocks=2 needs --data.few_shot_pool"):
        dm.setup()


def test_several_paths_are_answered_in_order_and_ids_must_not_repeat(tmp_path):
    dm = ParaphraseDataModule(path=[DEV, str(SHARED / "myriadlama" / "dev600.jsonl")], source="myriadlama",
                              task="myriadlama")
    dm.setup()
    assert len(dm.groups) == 800
    dm = ParaphraseDataModule(path=[FIXTURE, FIXTURE], source="myriadlama", task="myriadlama")
    with pytest.raises(ValueError, match="--data.path: record .* repeats"):
        dm.setup()


def with_blocks(groups, m=3):
    pool = [{"id": f"p{i}", "question": q, "answer": a} for i, (q, a) in enumerate(
        [("who wrote hamlet?", "shakespeare"), ("capital of peru?", "lima"), ("largest ocean?", "pacific"),
         ("who painted guernica?", "picasso"), ("what is h2o?", "water"), ("how many legs has a spider?", "eight")])]
    return attach_blocks([dict(g) for g in groups], pool, m, 2)


def test_a_member_in_a_batch_of_several_prefixes_is_encoded_as_if_asked_alone(tiny_lm, template, groups):
    """The decoder's several shared prefixes (left-padded, each encoded once): every row's logits and answer equal
    its whole prompt asked alone without any sharing."""
    dec, prompts = tiny_lm.decoder, tiny_lm.prompts(template)
    data = with_blocks(groups)
    items = [(g, m.text, m.block_index) for g in data for m in members(g)]
    batch = prompt_batch(dec, prompts, items)
    distinct = {tuple(map(tuple, map(dict.items, b))) for g in data for b in g["blocks"]}
    assert batch.prefix_rows is not None and batch.prefix_ids.shape[0] == 1 + len(distinct)  # each encoded once
    shared = dec.prefill(batch)[:, 0]
    shared_gens = dec.decode_n_tokens(prompt_batch(dec, prompts, items), no_fusion, no_fusion)
    for row, (g, text, block) in enumerate(items):
        full = prompts.for_block(g, block).prompt_ids(text)
        alone = dec.prefill(rows_batch(dec, [full]))[0, 0]
        torch.testing.assert_close(shared[row], alone, atol=2e-4, rtol=1e-4)
        gen = dec.decode_n_tokens(rows_batch(dec, [full]), no_fusion, no_fusion)[0]
        assert gen.token_ids == shared_gens[row].token_ids


@pytest.mark.parametrize("make", [PerPromptHead, VoteHead, lambda: LogitFusion("avg"), lambda: LogitFusion("prob_avg"),
                                  RerankHead])
def test_one_block_is_todays_run_token_for_token(make, tiny_lm, template, groups):
    """M = 1 (a pool given, demo_blocks 1) or a group cut to its first block answers exactly as without blocks."""
    prompts = tiny_lm.prompts(template)
    plain = make().generate(tiny_lm.decoder, prompts, groups)
    cut = make().generate(tiny_lm.decoder, prompts, [cut_blocks(g, 1) for g in with_blocks(groups)])
    assert [r["generation"] for r in cut] == [r["generation"] for r in plain]
    assert all("block_index" not in r for r in cut)


def test_per_prompt_with_blocks_answers_block_zero_as_without_and_names_each_block(tiny_lm, template, groups):
    prompts = tiny_lm.prompts(template)
    plain = PerPromptHead().generate(tiny_lm.decoder, prompts, groups)
    blocks = PerPromptHead().generate(tiny_lm.decoder, prompts, with_blocks(groups))
    assert len(blocks) == 3 * len(plain)
    zero = [r for r in blocks if r["block_index"] == 0]
    assert [r["generation"] for r in zero] == [r["generation"] for r in plain]
    assert sorted({r["block_index"] for r in blocks}) == [0, 1, 2]


def test_logit_fusion_over_identical_blocks_equals_one_block(tiny_lm, template, groups):
    """Blocks that repeat block 0's examples duplicate every member: avg of duplicates is the avg of the originals,
    so the fused answer is M = 1's, through the several-prefix path (blocks are other prefix rows)."""
    prompts = tiny_lm.prompts(template)
    same = [dict(g, blocks=[list(template.few_shot), list(template.few_shot)]) for g in groups]
    plain = LogitFusion("avg").generate(tiny_lm.decoder, prompts, groups)
    dup = LogitFusion("avg").generate(tiny_lm.decoder, prompts, same)
    assert [r["generation"] for r in dup] == [r["generation"] for r in plain]


def test_blocks_with_and_without_prefix_sharing_agree(tiny_lm, template, groups):
    dec, prompts = tiny_lm.decoder, tiny_lm.prompts(template)
    data = with_blocks(groups)
    shared = RerankHead().generate(dec, prompts, data)
    dec.share_prefix = False
    try:
        whole = RerankHead().generate(dec, prompts, data)
    finally:
        dec.share_prefix = True
    assert [r["generation"] for r in whole] == [r["generation"] for r in shared]


def test_calibration_and_weighted_rules_refuse_blocks_naming_the_record(tiny_lm, template, groups):
    data = [dict(g, confidences=[0.5] * len(g["paraphrases"])) for g in with_blocks(groups)]
    for head in (LogitFusion("avg", calibration="question"), LogitFusion("weighted_avg")):
        with pytest.raises(ValueError, match=r"record .*demo_blocks > 1"):
            head.generate(tiny_lm.decoder, tiny_lm.prompts(template), data)


def test_origin_ignores_blocks(tiny_lm, template, groups):
    prompts = tiny_lm.prompts(template)
    plain = OriginHead().generate(tiny_lm.decoder, prompts, groups)
    blocks = OriginHead().generate(tiny_lm.decoder, prompts, with_blocks(groups))
    assert [r["generation"] for r in blocks] == [r["generation"] for r in plain]
