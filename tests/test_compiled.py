"""Compiled decoding (``--model.compile``) gives the same tokens as eager decoding, for every head.

Compiled mode differs from eager in more than its kernels: group counts are padded to a power of two with padding
slots, cache lengths are bucketed, caches come from a pool reused across batches, and a finished group stays in the
batch until the live groups fit a smaller bucket. With ``stop=" "`` the tiny model's answers end at different
steps, so every one of those paths runs; the groups are ragged in prompt length and in size. ``aot_eager`` (the
same graph capture, eager kernels) checks every head; ``inductor`` (generated kernels) checks the main ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from selfens_pl.engine.decoding import GreedyDecoder
from selfens_pl.heads import CascadeHead, FlexFusion, LogitFusion, OriginHead, PerPromptHead, RerankHead, VoteHead

HEADS = {
    "origin": OriginHead,
    "per_prompt": PerPromptHead,
    "avg": lambda: LogitFusion("avg"),
    "max": lambda: LogitFusion("max"),
    "weighted_avg": lambda: LogitFusion("weighted_avg"),
    "weighted_max": lambda: LogitFusion("weighted_max"),
    "prob_avg": lambda: LogitFusion("prob_avg"),
    "entropy_weighted": lambda: LogitFusion("entropy_weighted"),
    "calibrated_avg": lambda: LogitFusion("avg", calibration="question"),
    "vote": VoteHead,
    "flex_concat": lambda: FlexFusion(layout="concat", backend="dense"),
    "flex_shared_prefix": lambda: FlexFusion(layout="shared_prefix", backend="dense"),
    "flex_shared_prefix_calibrated": lambda: FlexFusion(layout="shared_prefix", backend="dense",
                                                        calibration="question"),
    "rerank_mixture": RerankHead,
    "rerank_product_fused_prob_avg": lambda: RerankHead("product", fused="prob_avg"),
    "cascade": lambda: CascadeHead(first=2, threshold=0.75),
    "rerank_learned": lambda: RerankHead("learned", chooser=_chooser_file()),
    "rerank_mixture_demos": lambda: RerankHead(demo_answers=True),  # the demonstrations' answers scored too
    "prob_avg_origin0.5": lambda: LogitFusion("prob_avg", origin_share=0.5),  # the rows' weights ride the decode
}


def _chooser_file() -> str:
    """A chooser file with weights on several features (tests/test_chooser.py checks the features themselves)."""
    import tempfile

    from selfens_pl.scoring.chooser import FEATURES, Chooser

    weights = [0.5, 0.2, 0.3, 0.1, 1.0, 0.4, 0.2, 0.1, 0.3, 0.2, -0.5, 0.3, -0.1, -0.4]
    assert len(weights) == len(FEATURES)
    return str(Chooser(weights, 0.0, [0.0] * len(FEATURES), [1.0] * len(FEATURES)).save(
        Path(tempfile.mkdtemp()) / "chooser.json"))
#: Heads that decode one row per member, run again on groups with extra few-shot blocks (several prefixes).
MEMBER_HEADS = ["per_prompt", "vote", "avg", "entropy_weighted", "rerank_mixture", "rerank_learned", "cascade",
                "rerank_mixture_demos", "prob_avg_origin0.5"]


@pytest.fixture(scope="module")
def data():
    """Five demo groups with ragged prompt lengths, sizes 3, 3, 2, 3, 1, with confidences for the weighted rules."""
    import json
    from pathlib import Path

    from selfens_pl.data.datamodule import demo_path

    recs = [json.loads(line) for line in Path(demo_path()).read_text().splitlines()[:5]]
    sizes = [3, 3, 2, 3, 1]
    return [{"id": r["id"], "paraphrases": r["paraphrases"][:k], "answers": r["answers"],
             "confidences": [0.7, 0.2, 0.5][:k]} for r, k in zip(recs, sizes)]


def decoder(tiny_lm, **kwargs) -> GreedyDecoder:
    return GreedyDecoder(tiny_lm.lm, tiny_lm.tokenizer, max_new_tokens=8, stop=" ", **kwargs)


def answers(head, dec, prompts, batches):
    return [(r["generation"], r["id"]) for batch in batches for r in head.generate(dec, prompts, batch)]


@pytest.fixture(scope="module")
def aot_decoder(tiny_lm):
    return decoder(tiny_lm, compile=True, compile_backend="aot_eager")


@pytest.mark.parametrize("name", HEADS)
def test_compiled_equals_eager(name, tiny_lm, template, data, aot_decoder):
    prompts = tiny_lm.prompts(template)
    batches = [data, data[:3]]  # two batch shapes through the same pooled caches
    eager = answers(HEADS[name](), decoder(tiny_lm, compile=False), prompts, batches)
    assert answers(HEADS[name](), aot_decoder, prompts, batches) == eager
    lengths = {len(text) for text, _ in eager}
    assert len(lengths) > 2, "answers must stop at different steps, or the shrinking path is not exercised"


@pytest.mark.parametrize("name", MEMBER_HEADS)
def test_compiled_equals_eager_with_few_shot_blocks(name, tiny_lm, template, data, aot_decoder):
    from test_demos import with_blocks

    prompts = tiny_lm.prompts(template)
    blocks = with_blocks(data, m=2)
    batches = [blocks, blocks[:3]]
    eager = answers(HEADS[name](), decoder(tiny_lm, compile=False), prompts, batches)
    assert answers(HEADS[name](), aot_decoder, prompts, batches) == eager


def test_inductor_compiled_equals_eager(tiny_lm, template, data):
    """Generated kernels (inductor, C++ on this CPU): same tokens, log-probabilities within float tolerance.
    Two groups keep the compile bill small (buckets of 2 and 1 groups; flex reuses origin's one-row step)."""
    prompts = tiny_lm.prompts(template)
    compiled, eager = decoder(tiny_lm, compile=True), decoder(tiny_lm, compile=False)
    for head in (OriginHead(), LogitFusion("avg"), FlexFusion(layout="shared_prefix", backend="dense"),
                 RerankHead()):
        a, b = generations(eager, head, prompts, data[:2]), generations(compiled, head, prompts, data[:2])
        assert [g.token_ids for g in a] == [g.token_ids for g in b], head.method
        for x, y in zip(a, b):
            torch.testing.assert_close(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("head", [LogitFusion("avg", calibration="question"),
                                  LogitFusion("prob_avg", calibration="subject"),
                                  LogitFusion("weighted_avg", calibration="question")], ids=lambda h: h.method)
def test_inductor_fusion_with_a_changing_batch_size(head):
    """The compiled fusion + argmax under inductor as the decoder calls it: one static compile, then a dynamic one
    for every later group count. A calibrated rule splits its content-free rows off by shape; sliced with a
    shape-derived bound, inductor (torch 2.13, CPU) returned garbage and NaN once the batch went dynamic."""
    from selfens_pl.engine.decoding import fuse_and_pick

    torch._dynamo.reset()
    compiled = torch.compile(fuse_and_pick, fullgraph=True, dynamic=None, backend="inductor")
    generator = torch.Generator().manual_seed(0)
    n = 6 if head.calibration == "subject" else 4  # rows per group: paraphrases + content-free rows
    for g in (8, 4, 2, 1, 3):
        logits = torch.randn(g * n, 512, generator=generator)
        valid = torch.rand(g, n, generator=generator) > 0.3
        valid[:, 0] = valid[:, n // 2] = valid[:, -1] = True
        weights = torch.rand(g, n, generator=generator)
        tokens, logprobs = fuse_and_pick(head.fuse, logits, n, weights, valid)
        got_tokens, got_logprobs = compiled(head.fuse, logits, n, weights, valid)
        assert torch.equal(got_tokens, tokens), (head.method, g)
        torch.testing.assert_close(got_logprobs, logprobs, atol=1e-5, rtol=1e-5)


def generations(dec, head, prompts, groups) -> list:
    """The decoder's ``Generation`` objects behind ``head``'s records (token ids and log-probabilities)."""
    seen = []
    run = dec.decode_n_tokens
    dec.decode_n_tokens = lambda *args: seen.extend(run(*args)) or seen  # every head decodes once per batch
    try:
        head.generate(dec, prompts, groups)
    finally:
        del dec.decode_n_tokens
    return seen


def test_second_pass_compiles_nothing(tiny_lm, template, data, aot_decoder):
    """Shapes are bucketed and caches pooled: answering the same batches again adds no compiled graph."""
    from torch._dynamo.utils import counters

    prompts = tiny_lm.prompts(template)
    head = LogitFusion("avg")
    answers(head, aot_decoder, prompts, [data, data[:3]])
    before = counters["stats"]["unique_graphs"]
    answers(head, aot_decoder, prompts, [data[:3], data])
    assert counters["stats"]["unique_graphs"] == before


def test_compile_flag_is_checked():
    with pytest.raises(ValueError, match=r"--model\.compile='yes'"):
        GreedyDecoder(None, None, compile="yes")


def test_a_compile_failure_names_the_flag(tiny_lm, template, data):
    """A fusion rule that cannot be captured in one graph (a host sync) fails loudly, naming --model.compile."""
    dec = decoder(tiny_lm, compile=True, compile_backend="aot_eager")

    def host_synced_rule(logits, weights=None, valid=None):
        if logits.sum().item() > 0:  # data-dependent Python: not capturable with fullgraph=True
            return logits.mean(1)
        return logits.amax(1)

    from selfens_pl.engine.batches import prompt_batch

    n = 3
    items = [(g, p) for g in data[:2] for p in g["paraphrases"]]
    with pytest.raises(RuntimeError, match=r"--model\.compile=True: torch\.compile failed"):
        dec.decode_n_tokens(prompt_batch(dec, tiny_lm.prompts(template), items, n), host_synced_rule, host_synced_rule)



def test_compiled_equals_eager_with_wider_candidates(tiny_lm, template, data, aot_decoder):
    """``RerankHead(first_tokens=3)``: the alternatives' decode (the rank riding in the first token's weights, then
    plain greedy steps through padded buckets and shrinking) gives the same tokens and the same records compiled."""
    from test_demos import with_blocks

    from selfens_pl.data.demos import members

    def decoded(dec, batch):
        """Every decode's ``Generation`` objects (the members', then the alternatives') and the records."""
        seen = []
        run = dec.decode_n_tokens
        dec.decode_n_tokens = lambda *args: seen.append(run(*args)) or seen[-1]
        try:
            records = RerankHead(first_tokens=3).generate(dec, prompts, batch)
        finally:
            del dec.decode_n_tokens
        return seen, records

    prompts = tiny_lm.prompts(template)
    eager_decoder = decoder(tiny_lm, compile=False)
    for batch in (data, data[:3], with_blocks(data, m=2)):
        eager, want = decoded(eager_decoder, batch)
        compiled, got = decoded(aot_decoder, batch)
        assert [len(gens) for gens in eager] == [len(gens) for gens in compiled] == [
            sum(len(members(g)) for g in batch) * r for r in (1, 2)]
        assert len({len(g.token_ids) for g in eager[1]}) > 2  # the alternatives end at different steps
        for e, c in zip(eager, compiled):
            assert [(g.token_ids, g.end) for g in c] == [(g.token_ids, g.end) for g in e]
            for x, y in zip(e, c):
                torch.testing.assert_close(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-5, rtol=1e-5)
        assert [(r["generation"], r["candidates"]) for r in got] == [(r["generation"], r["candidates"]) for r in want]


def test_the_sweeps_fused_rules_compiled_equal_eager(tiny_lm, template, data, aot_decoder):
    """The sweep's engine decodes every LogitFusion rule from one encoding, one decode per rule (a weighted one,
    ``prob_avg@0.5``, with its rows' weights, and ``avg@auto`` with some groups' paraphrases generated): the same
    answers compiled, batch after batch."""
    from test_demos import with_blocks

    from selfens_pl.engine.members import encode_members, fused_answers, member_rows

    prompts = tiny_lm.prompts(template)
    rules = ["avg", "prob_avg@0.5", "entropy_weighted", "avg@auto"]

    def fused(dec, batch):
        items, encoded, starts = encode_members(dec, prompts, batch)
        rows = member_rows(items, starts)
        shapes = [(len(g["paraphrases"]), len(own) // len(g["paraphrases"])) for g, own in zip(batch, rows)]
        generated = [i % 2 == 0 for i in range(len(batch))]  # auto: the share for every other group
        return [[gen.token_ids for gen in own]
                for own in fused_answers(dec, encoded, rows, rules, shapes, generated)]

    eager_decoder = decoder(tiny_lm, compile=False)
    for batch in (data, data[:3], with_blocks(data, m=2), with_blocks(data, m=2)[:2]):
        want = fused(eager_decoder, batch)
        assert fused(aot_decoder, batch) == want
        assert len({tuple(map(tuple, own)) for own in want}) > 1
