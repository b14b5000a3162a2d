"""FlexFusion with few-shot blocks (:mod:`selfens_pl.data.demos`): one segment per member (paraphrase x block), each block's
prefix seen only by its own questions, every member encoded as if asked alone with its block, M = 1 unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED
from test_demos import with_blocks
from test_ragged import first_scores

from selfens_pl.commands.mask import main
from selfens_pl.data.demos import cut_blocks, members
from selfens_pl.engine.attention import GENERATED, PAD, PREFIX, block_mask, dense_mask
from selfens_pl.engine.batches import rows_batch
from selfens_pl.engine.decoding import GreedyDecoder
from selfens_pl.heads import FlexFusion
from selfens_pl.heads.flex import build_layout, mask_for_picture

LAYOUTS = ("concat", "shared_prefix")
ROOT = Path(__file__).resolve().parents[1]
DEV = str(SHARED / "myriadlama" / "dev.jsonl")


def generations(records):
    return [r["generation"] for r in records]


@pytest.fixture
def unshared(tiny_lm):
    """A decoder that encodes every prefix inside its row (no KV sharing across the batch)."""
    return GreedyDecoder(tiny_lm.lm, tiny_lm.tokenizer, max_new_tokens=8, stop=None, share_prefix=False)


def same_blocks(groups, template):
    """Two extra blocks that repeat block 0's examples."""
    return [dict(g, blocks=[list(template.few_shot), list(template.few_shot)]) for g in groups]


# -- the mask rule ---------------------------------------------------------------------------------------------------

# [pad] [prefix B0 x2] [member 0 x2] [member 1] [prefix B1 x2] [member 2 x2] [member 3] [generated x2]
SEGMENTS = [PAD, PREFIX, PREFIX, 0, 0, 1, PREFIX, PREFIX, 2, 2, 3, GENERATED, GENERATED]
BLOCKS = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0]
# which key (column) each query (row) sees, written by hand; the padding row 0 sees only itself
EXPECTED = """
1000000000000
0100000000000
0110000000000
0111000000000
0111100000000
0110010000000
0000001000000
0000001100000
0000001110000
0000001111000
0000001100100
0111111111110
0111111111111
"""


def expected_mask() -> torch.Tensor:
    return torch.tensor([[c == "1" for c in row] for row in EXPECTED.split()])


def rule_in_loops(segments: list[int], blocks: list[int]) -> np.ndarray:
    """The rule restated with plain loops (no padding): causal; generated sees all; else same block and (prefix or
    same segment)."""
    n = len(segments)
    out = np.zeros((n, n), dtype=bool)
    for q in range(n):
        for k in range(q + 1):
            if segments[q] == GENERATED:
                out[q, k] = True
            elif blocks[k] == blocks[q] and (segments[k] == PREFIX or segments[k] == segments[q]):
                out[q, k] = True
    return out


def test_block_rule_by_hand_dense_and_flex():
    seg, blk = torch.tensor([SEGMENTS]), torch.tensor([BLOCKS])
    expected = expected_mask()
    assert torch.equal(dense_mask(seg, blk)[0, 0], expected)
    assert torch.equal(torch.from_numpy(rule_in_loops(SEGMENTS[1:], BLOCKS[1:])), expected[1:, 1:])
    q, kv = torch.arange(len(SEGMENTS))[:, None], torch.arange(len(SEGMENTS))[None, :]
    flex = block_mask(seg, block_ids=blk).mask_mod(torch.tensor(0), torch.tensor(0), q, kv)
    assert torch.equal(flex, expected)
    # a prefix in the KV cache (--model.share_prefix): the queries start after it, the rule is unchanged
    cached = block_mask(seg, q_offset=3, block_ids=blk).mask_mod(torch.tensor(0), torch.tensor(0), q[:-3], kv)
    assert torch.equal(cached, expected[3:])
    # control: without block ids a block-1 question would see block 0's prefix and block 1's prefix block 0's
    one_block = dense_mask(seg)[0, 0]
    assert one_block[8, 1] and not expected[8, 1] and one_block[6, 2] and not expected[6, 2]


def test_picture_of_a_group_with_blocks_follows_the_rule(tiny_lm, template, groups):
    prompts = tiny_lm.prompts(template)
    group = with_blocks(groups[:1], m=3)[0]
    k = len(group["paraphrases"])
    mask, lay = mask_for_picture(prompts, group["paraphrases"], "shared_prefix", "aligned", generated=3, group=group)
    expected_segments, expected_blocks = [], []
    for b in range(3):
        block = prompts.for_block(group, b)
        expected_segments += [PREFIX] * len(block.prefix_ids)
        expected_segments += [b * k + i for i, p in enumerate(group["paraphrases"]) for _ in block.question_ids(p)]
    assert lay.segments == expected_segments
    assert [lay.blocks[i] for i, s in enumerate(lay.segments) if s >= 0] == \
        [j // k for j in lay.segments if j >= 0]
    segments, blocks = lay.segments + [GENERATED] * 3, lay.blocks + [0] * 3
    assert np.array_equal(mask.numpy(), rule_in_loops(segments, blocks))


# -- M = 1 is today's run ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", ["dense", "flex"])
def test_one_block_is_todays_flex_token_for_token(tiny_lm, template, groups, layout, backend):
    dec, prompts = tiny_lm.decoder, tiny_lm.prompts(template)
    head = FlexFusion(layout=layout, backend=backend, compile=False)
    cut = [cut_blocks(g, 1) for g in with_blocks(groups)]
    plain_batch, cut_batch = head.build_batch(dec, prompts, groups), head.build_batch(dec, prompts, cut)
    for name in ("input_ids", "position_ids", "next_position", "gather", "pad_mask"):
        assert torch.equal(getattr(cut_batch, name), getattr(plain_batch, name)), name
    if backend == "dense":
        assert torch.equal(cut_batch.attention_mask, plain_batch.attention_mask)
    assert generations(head.generate(dec, prompts, cut)) == generations(head.generate(dec, prompts, groups))


# -- every member encoded as if asked alone with its block ------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["identical", "drawn"])
@pytest.mark.parametrize("shared", [True, False])
def test_each_member_is_encoded_as_if_asked_alone_with_its_block(tiny_lm, unshared, template, groups, layout, kind,
                                                                 shared):
    dec = tiny_lm.decoder if shared else unshared
    prompts = tiny_lm.prompts(template)
    data = same_blocks(groups, template) if kind == "identical" else with_blocks(groups)
    fused = dec.prefill(FlexFusion(layout=layout, backend="dense").build_batch(dec, prompts, data))  # [g, K*M, V]
    assert fused.shape[1] == max(len(members(g)) for g in data) == 9
    for gi, group in enumerate(data):
        for j, member in enumerate(members(group)):
            full = prompts.for_block(group, member.block_index).prompt_ids(member.text)
            alone = dec.prefill(rows_batch(dec, [full]))[0, 0]
            torch.testing.assert_close(fused[gi, j], alone, atol=2e-4, rtol=1e-4)


def test_sequential_positions_do_not_encode_later_blocks_alone(tiny_lm, template, groups):
    """Control for the test above: with the reference code's sequential positions a block-1 question that does not directly
    follow its prefix is not encoded alone (rotary attention sees only distances, so the first one still is)."""
    dec, prompts = tiny_lm.decoder, tiny_lm.prompts(template)
    data = with_blocks(groups[:1])
    fused = dec.prefill(FlexFusion(layout="shared_prefix", positions="sequential", backend="dense")
                        .build_batch(dec, prompts, data))
    for j, far in ((3, False), (4, True)):  # paraphrase 0, then 1, with block 1
        member = members(data[0])[j]
        alone = dec.prefill(rows_batch(dec, [prompts.for_block(data[0], 1).prompt_ids(member.text)]))[0, 0]
        assert torch.allclose(fused[0, j], alone, atol=1e-3) != far


@pytest.mark.parametrize("rule", ["avg", "prob_avg"])
def test_the_first_token_fuses_every_member(tiny_lm, template, groups, rule):
    """Blocks that repeat block 0 repeat every member M times: a mean over all K x M members is the mean over K."""
    head = FlexFusion(layout="shared_prefix", fusion=rule, backend="dense")
    for dup, plain in zip(first_scores(head, tiny_lm, template, same_blocks(groups, template)),
                          first_scores(FlexFusion(layout="shared_prefix", fusion=rule, backend="dense"), tiny_lm,
                                       template, groups)):
        torch.testing.assert_close(dup, plain, atol=2e-4, rtol=1e-4)


# -- backends, batches and the shared prefix ---------------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("positions", ["aligned", "sequential"])
def test_flex_backend_equals_dense_with_blocks(tiny_lm, template, groups, layout, positions):
    dec, prompts = tiny_lm.decoder, tiny_lm.prompts(template)
    data = with_blocks(groups)
    dense = FlexFusion(layout=layout, positions=positions, backend="dense")
    flex = FlexFusion(layout=layout, positions=positions, backend="flex", compile=False)  # eager flex: the reference
    torch.testing.assert_close(dec.prefill(flex.build_batch(dec, prompts, data)),
                               dec.prefill(dense.build_batch(dec, prompts, data)), atol=1e-4, rtol=1e-4)
    assert generations(flex.generate(dec, prompts, data)) == generations(dense.generate(dec, prompts, data))


def test_compiled_flex_kernel_with_blocks_equals_dense(tiny_lm, template, groups):
    """The kernel CUDA runs: flex_attention compiled (inductor; C++ on this CPU) with the block mask."""
    dec, prompts = tiny_lm.decoder, tiny_lm.prompts(template)
    data = with_blocks(groups)
    dense = FlexFusion(layout="shared_prefix", backend="dense")
    flex = FlexFusion(layout="shared_prefix", backend="flex", compile=True)
    torch.testing.assert_close(dec.prefill(flex.build_batch(dec, prompts, data)),
                               dec.prefill(dense.build_batch(dec, prompts, data)), atol=1e-4, rtol=1e-4)
    assert generations(flex.generate(dec, prompts, data)) == generations(dense.generate(dec, prompts, data))


def ragged_blocks(groups: list[dict]) -> list[dict]:
    """(K, M) = (3, 3), (1, 2), (2, 1): 9, 2 and 2 members."""
    data = with_blocks(groups)
    return [data[0], cut_blocks(dict(data[1], paraphrases=data[1]["paraphrases"][:1]), 2),
            cut_blocks(dict(data[2], paraphrases=data[2]["paraphrases"][:2]), 1)]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("first_token", ["fused", "last_segment"])
def test_ragged_groups_with_blocks_batched_equal_alone(tiny_lm, template, groups, layout, first_token):
    data = ragged_blocks(groups)

    def head():
        return FlexFusion(layout=layout, first_token=first_token, backend="dense")

    batched = first_scores(head(), tiny_lm, template, data)
    for i, group in enumerate(data):
        torch.testing.assert_close(batched[i], first_scores(head(), tiny_lm, template, [group])[0],
                                   atol=2e-4, rtol=1e-4)
    prompts = tiny_lm.prompts(template)
    assert generations(head().generate(tiny_lm.decoder, prompts, data)) == \
        [head().generate(tiny_lm.decoder, prompts, [g])[0]["generation"] for g in data]


def test_block_zeros_prefix_is_shared_through_the_cache(tiny_lm, unshared, template, groups):
    """--model.share_prefix with blocks: block 0's prefix is encoded once per batch (the others once per group), and
    the logits and answers are those of the unshared run."""
    prompts = tiny_lm.prompts(template)
    data = with_blocks(groups)
    head = FlexFusion(layout="shared_prefix", backend="dense")
    torch.testing.assert_close(tiny_lm.decoder.prefill(head.build_batch(tiny_lm.decoder, prompts, data)),
                               unshared.prefill(head.build_batch(unshared, prompts, data)), atol=2e-4, rtol=1e-4)
    questions = sum(len(prompts.for_block(g, m.block_index).question_ids(m.text)) for g in data for m in members(g))
    later = sum(len(prompts.for_block(g, b).prefix_ids) for g in data for b in (1, 2))
    p = len(prompts.prefix_ids)
    answers = []
    for dec, expected in ((tiny_lm.decoder, p + later + questions), (unshared, len(data) * p + later + questions)):
        dec.stats.__init__()
        answers.append(generations(head.generate(dec, prompts, data)))
        assert dec.stats.prompt_tokens == expected
    assert answers[0] == answers[1]


def test_calibration_and_weighted_rules_refuse_blocks_naming_the_record(tiny_lm, template, groups):
    data = [dict(g, confidences=[0.5] * len(g["paraphrases"])) for g in with_blocks(groups)]
    for head in (FlexFusion(layout="shared_prefix", backend="dense", calibration="question"),
                 FlexFusion(fusion="weighted_avg", backend="dense")):
        with pytest.raises(ValueError, match=rf"record {data[0]['id']!r}.*demo_blocks > 1"):
            head.generate(tiny_lm.decoder, tiny_lm.prompts(template), data)


def test_mask_command_draws_the_blocks(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["--config", str(ROOT / "configs" / "flex_myriadlama.yaml"), "--model.model", str(tiny_model_dir),
          "--data.path", DEV, "--data.limit", "1", "--data.demo_blocks", "2", "--data.few_shot_pool", DEV,
          "--num_paraphrases", "2", "--generated", "2", "--out", "mask.png"])
    printed = capsys.readouterr().out
    runs = re.findall(r"([\w/]+)=(\d+)", printed.splitlines()[-1].split(": ", 1)[1])
    assert [name for name, _ in runs] == ["prefix/B0", "P1/B0", "P2/B0", "prefix/B1", "P1/B1", "P2/B1", "generated"]
    segments, blocks = [], []
    for name, size in runs:
        seg = {"prefix": PREFIX, "generated": GENERATED}.get(name.split("/")[0])
        if seg is None:
            seg = int(name[1:].split("/")[0]) - 1 + 2 * int(name[-1])
        segments += [seg] * int(size)
        blocks += [int(name[-1]) if "/B" in name else 0] * int(size)
    assert np.array_equal(np.load(tmp_path / "mask.npy"), rule_in_loops(segments, blocks))
