"""Demonstration blocks as an ensemble dimension (:mod:`selfens_pl.data.demos`): the draw, the data module, the decoder's
several shared prefixes, and every member-decoding head with blocks."""

from __future__ import annotations

import random

import bm25s
import pytest
import torch
from conftest import SHARED
from jsonargparse import ArgumentParser

from selfens_pl.data.datamodule import ParaphraseDataModule
from selfens_pl.data.demos import attach_blocks, cut_blocks, draw_blocks, load_pool, members, words
from selfens_pl.engine.batches import prompt_batch, rows_batch
from selfens_pl.engine.fusion import no_fusion
from selfens_pl.errors import UsageError, UserError, parse_errors_raise, summarize_parse_error
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


# -- --data.demo_selection: random (today's draw) and similar (BM25) --------------------------------------------------
def blocks_answers(blocks):
    return [[e["answer"] for e in b] for b in blocks]


def test_random_selection_is_the_default_draw_pinned():
    """``random`` is the draw the package always made: the default, and pinned for one group, so a change of the
    generator or of the exclusions shows here."""
    pool = pool_of(40)
    group = {"id": "f3", "paraphrases": ["Question number 7?", "something else"]}
    default = attach_blocks([dict(group)], pool, 3, 5)[0]["blocks"]
    assert attach_blocks([dict(group)], pool, 3, 5, demo_selection="random")[0]["blocks"] == default
    assert default == draw_blocks(group, pool, 3, 5)
    assert blocks_answers(default) == [["a0", "a22", "a37", "a20", "a9"], ["a18", "a1", "a13", "a2", "a38"]]


@pytest.mark.skipif(not (SHARED / "myriadlama").is_dir(), reason="../shared MyriadLAMA data not available")
def test_random_selection_in_the_data_module_equals_the_default():
    kwargs = dict(path=DEV, source="myriadlama", task="myriadlama", num_manual=3, limit=20, demo_blocks=3,
                  few_shot_pool=DEV)
    default, random_ = ParaphraseDataModule(**kwargs), ParaphraseDataModule(**kwargs, demo_selection="random")
    default.setup(), random_.setup()
    assert [g["blocks"] for g in random_.groups] == [g["blocks"] for g in default.groups]
    first = default.groups[0]  # pinned: the first fact of dev.jsonl
    assert first["id"] == "17455b48df8b5f0-410dd1a3f8e8229"
    assert blocks_answers(first["blocks"]) == [["Tibet", "mayor", "abbot", "midfielder", "harbour"],
                                               ["pianist", "Monroe", "Swedish", "Paris", "Melbourne"]]


def graded_pool() -> list[dict]:
    """Five questions sharing three words with "alpha beta gamma delta", five sharing one, six sharing none; the ids
    sort the other way round (fillers first), so only the score can put the close ones first."""
    close = [{"id": f"z{i}", "question": f"alpha beta gamma w{i} [MASK]?", "answer": f"close{i}"} for i in range(5)]
    far = [{"id": f"y{i}", "question": f"alpha v{i} u{i} t{i} [MASK]?", "answer": f"far{i}"} for i in range(5)]
    none = [{"id": f"a{i}", "question": f"s{i} r{i} q{i} p{i} [MASK]?", "answer": f"none{i}"} for i in range(6)]
    return close + far + none


def test_similar_block_j_holds_the_5j_most_similar_and_never_the_groups_own_fact():
    pool = graded_pool() + [
        {"id": "g", "question": "alpha beta gamma delta [MASK]?", "answer": "own id"},
        {"id": "b0", "question": "  ALPHA beta   gamma delta [MASK]? ", "answer": "own text"},
    ]
    group = {"id": "g", "paraphrases": ["alpha beta gamma delta [MASK]?", "Alpha beta gamma delta [MASK]?"]}
    blocks = attach_blocks([dict(group)], pool, 3, 5, demo_selection="similar")[0]["blocks"]
    # block 1: the five closest (ties by id), block 2: the next five; the group's own fact (id, text) never
    assert blocks_answers(blocks) == [[f"close{i}" for i in range(5)], [f"far{i}" for i in range(5)]]
    assert attach_blocks([dict(group)], pool, 2, 5, demo_selection="similar")[0]["blocks"] == blocks[:1]


def test_similar_most_similar_question_leads_the_first_extra_block():
    fillers = [{"id": f"p{i}", "question": q, "answer": f"a{i}"} for i, q in enumerate(
        ["[MASK] is the capital of Peru.", "Which river flows through Cairo? [MASK].", "Hamlet was written by [MASK].",
         "The Pacific is a [MASK].", "Guernica was painted by [MASK].", "Water boils at [MASK] degrees.",
         "A spider has [MASK] legs.", "Tokyo is located in [MASK].", "The Nile flows into the [MASK]."])]
    target = {"id": "p9", "question": "Alan Turing is a [MASK] by profession.", "answer": "mathematician"}
    pool = fillers[:4] + [target] + fillers[4:]
    group = {"id": "ada", "paraphrases": ["Ada Lovelace is a [MASK] by profession."]}
    blocks = attach_blocks([group], pool, 2, 5, demo_selection="similar")[0]["blocks"]
    assert blocks[0][0] == {"question": target["question"], "answer": "mathematician"}


def test_similar_strips_mask_and_lowercases():
    assert words("[MASK] is the Country of X-Men? [MASK].") == ["is", "the", "country", "of", "x", "men"]


def test_similar_is_deterministic_whatever_the_pool_order():
    pool = graded_pool() + pool_of(30)
    groups = [{"id": f"f{i}", "paraphrases": [f"question number {i}? alpha", "x"]} for i in range(10)]
    once = [g["blocks"] for g in attach_blocks([dict(g) for g in groups], pool, 4, 5, demo_selection="similar")]
    shuffled = list(pool)
    random.Random(0).shuffle(shuffled)
    again = [g["blocks"] for g in attach_blocks([dict(g) for g in groups], shuffled, 4, 5, demo_selection="similar")]
    assert again == once
    for group, blocks in zip(groups, once):
        shown = [e["question"] for b in blocks for e in b]
        assert len(blocks) == 3 and len(set(shown)) == 15  # disjoint blocks
        assert f"question number {group['id'][1:]}?" not in shown  # its own fact (by id)


@pytest.mark.skipif(not (SHARED / "myriadlama").is_dir(), reason="../shared MyriadLAMA data not available")
def test_similar_in_the_data_module_keeps_block_zero_and_never_shows_the_fact(monkeypatch):
    indexed = []
    original = bm25s.BM25.index
    monkeypatch.setattr(bm25s.BM25, "index", lambda self, *a, **k: indexed.append(1) or original(self, *a, **k))
    kwargs = dict(path=DEV, source="myriadlama", task="myriadlama", num_manual=3, limit=30, demo_blocks=3,
                  few_shot_pool=DEV)
    similar = ParaphraseDataModule(**kwargs, demo_selection="similar")
    similar.setup()
    assert indexed == [1]  # one index for the pool, not one per group
    plain = ParaphraseDataModule(**kwargs)
    plain.setup()
    assert similar.template == plain.template  # block 0 is the configured block
    pool = {d["question"]: d["id"] for d in load_pool(DEV, "myriadlama")}
    for g in similar.groups:
        shown = [e["question"] for b in g["blocks"] for e in b]
        assert len(g["blocks"]) == 2 and len(set(shown)) == 10
        assert all(pool[q] != g["id"] and q not in g["paraphrases"] for q in shown)
        assert members(g)[:3] == members(cut_blocks(g, 1))
    assert [g["blocks"] for g in similar.groups] != [g["blocks"] for g in plain.groups]


def test_similar_with_one_block_needs_no_pool():
    plain = ParaphraseDataModule(path=FIXTURE, source="myriadlama", task="myriadlama")
    similar = ParaphraseDataModule(path=FIXTURE, source="myriadlama", task="myriadlama", demo_selection="similar")
    plain.setup(), similar.setup()
    assert similar.groups == plain.groups and all("blocks" not in g for g in similar.groups)
    group = {"id": "g", "paraphrases": ["q"]}
    assert attach_blocks([dict(group)], [], 1, 5, "similar") == [group]  # an empty pool: nothing to fill


def test_similar_pool_too_small_is_one_error_naming_the_flag_and_the_record():
    pool = pool_of(9) + [{"id": "g", "question": "mine", "answer": "x"}, {"id": "h", "question": " Mine", "answer": "y"}]
    # the record's own id and its own question (up to case and spacing) leave 9 for the 10 of M = 3
    with pytest.raises(UserError, match=r"record 'g': --data.few_shot_pool holds 9 .*--data.demo_blocks=3 needs 10"):
        attach_blocks([{"id": "g", "paraphrases": ["mine"]}], pool, 3, 5, demo_selection="similar")


def test_unknown_demo_selection_is_the_parsers_error_and_the_flag_is_documented():
    parser = ArgumentParser(prog="t")
    parser.add_class_arguments(ParaphraseDataModule, "data")
    with parse_errors_raise(), pytest.raises(UsageError) as err:
        parser.parse_args(["--data.demo_selection", "nearest"])
    assert summarize_parse_error(str(err.value)) == "--data.demo_selection='nearest': choose one of random, similar"
    assert "BM25" in parser.format_help()
    with pytest.raises(UserError, match=r"--data.demo_selection='nearest': choose one of random, similar"):
        ParaphraseDataModule(path=FIXTURE, source="myriadlama", task="myriadlama", demo_selection="nearest").setup()
