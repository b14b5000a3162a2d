"""FlexFusion: one sequence per group, isolated paraphrases, fused decoding; dense and flex backends agree."""

from __future__ import annotations

import pytest
import torch

from selfens_pl.data.prompts import PromptTokenizer
from selfens_pl.engine.attention import GENERATED, PAD, PREFIX, FlexSettings, dense_mask
from selfens_pl.engine.batches import rows_batch
from selfens_pl.engine.decoding import GreedyDecoder
from selfens_pl.heads import FlexFusion, OriginHead
from selfens_pl.heads.flex import build_layout

LAYOUTS = ("concat", "shared_prefix")


@pytest.fixture
def prompts(tiny_lm, template):
    return PromptTokenizer(tiny_lm.tokenizer, template)


def generations(records):
    return [r["generation"] for r in records]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", ["dense", "flex"])
def test_one_paraphrase_equals_origin(tiny_lm, prompts, groups, layout, backend):
    single = [dict(g, paraphrases=g["paraphrases"][:1]) for g in groups]
    origin = OriginHead().generate(tiny_lm.decoder, prompts, single)
    flex = FlexFusion(layout=layout, backend=backend, compile=False).generate(tiny_lm.decoder, prompts, single)
    assert generations(flex) == generations(origin)
    assert all(r["generation"] for r in origin)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_aligned_final_logits_equal_each_paraphrase_alone(tiny_lm, prompts, groups, layout):
    dec = tiny_lm.decoder
    head = FlexFusion(layout=layout, backend="dense")
    fused = dec.prefill(head.build_batch(dec, prompts, groups))  # [g, N, V]
    for gi, group in enumerate(groups):
        for pi, paraphrase in enumerate(group["paraphrases"]):
            alone = dec.prefill(rows_batch(dec, [prompts.prompt_ids(paraphrase)]))[0, 0]
            torch.testing.assert_close(fused[gi, pi], alone, atol=1e-4, rtol=1e-4)


def test_sequential_positions_change_the_encoding(tiny_lm, prompts, groups):
    """Control for the test above: with the reference code's sequential positions the paraphrases are NOT encoded alone."""
    dec = tiny_lm.decoder
    fused = dec.prefill(FlexFusion(layout="shared_prefix", positions="sequential", backend="dense")
                        .build_batch(dec, prompts, groups[:1]))
    alone = dec.prefill(rows_batch(dec, [prompts.prompt_ids(groups[0]["paraphrases"][1])]))
    assert not torch.allclose(fused[0, 1], alone[0, 0], atol=1e-3)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("positions", ["aligned", "sequential"])
def test_flex_backend_equals_dense(tiny_lm, prompts, groups, layout, positions):
    dec = tiny_lm.decoder
    dense = FlexFusion(layout=layout, positions=positions, backend="dense")
    flex = FlexFusion(layout=layout, positions=positions, backend="flex", compile=False)  # eager flex on CPU
    logits_dense = dec.prefill(dense.build_batch(dec, prompts, groups))
    logits_flex = dec.prefill(flex.build_batch(dec, prompts, groups))
    torch.testing.assert_close(logits_flex, logits_dense, atol=1e-4, rtol=1e-4)
    assert generations(flex.generate(dec, prompts, groups)) == generations(dense.generate(dec, prompts, groups))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("first_token", ["fused", "last_segment"])
def test_batched_equals_unbatched(tiny_lm, prompts, groups, layout, first_token):
    head = FlexFusion(layout=layout, first_token=first_token, backend="dense")
    batched = head.generate(tiny_lm.decoder, prompts, groups)
    alone = [head.generate(tiny_lm.decoder, prompts, [g])[0] for g in groups]
    assert generations(batched) == generations(alone)


@pytest.fixture
def unshared(tiny_lm):
    """A decoder that encodes every prefix inside its row (no KV sharing across the batch)."""
    return GreedyDecoder(tiny_lm.lm, tiny_lm.tokenizer, max_new_tokens=8, stop=None, share_prefix=False)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_no_mask_row_fully_blocked_and_paraphrases_isolated(unshared, prompts, groups, layout):
    dec = unshared
    batch = FlexFusion(layout=layout, backend="dense").build_batch(dec, prompts, groups)
    mask = batch.attention_mask[:, 0]  # [g, s, s]
    assert mask.any(-1).all(), "a fully blocked row makes softmax NaN"
    for g, lay in enumerate(build_layout(prompts, p["paraphrases"], layout, "aligned") for p in groups):
        seg = torch.tensor(lay.segments)
        m = mask[g, -len(seg):, -len(seg):]
        cross = (seg[:, None] >= 0) & (seg[None, :] >= 0) & (seg[:, None] != seg[None, :])
        assert not m[cross].any(), "a paraphrase token sees another paraphrase"
        sees_prefix = (seg[:, None] >= 0) & (seg[None, :] == PREFIX)
        assert m[sees_prefix].all(), "a paraphrase token misses part of the shared prefix"
    # generated tokens see every real token before them
    seg = torch.tensor([[PAD, PREFIX, PREFIX, 0, 0, 1, 1, GENERATED, GENERATED]])
    gen_rows = dense_mask(seg)[0, 0, -2:]
    assert gen_rows[:, 1:7].all() and not gen_rows[:, 0].any()


def test_shared_prefix_is_encoded_once(tiny_lm, unshared, prompts, groups):
    """Once per group inside its sequence, or once per batch when the decoder shares the prefix's KV cache."""
    p = len(prompts.prefix_ids)
    questions = sum(len(prompts.question_ids(x)) for g in groups for x in g["paraphrases"])
    cases = ((unshared, "shared_prefix", len(groups) * p + questions, 0),
             (tiny_lm.decoder, "shared_prefix", p + questions, 1),
             (unshared, "concat", sum(len(g["paraphrases"]) for g in groups) * p + questions, 0))
    for dec, layout, expected, prefix_calls in cases:
        dec.stats.__init__()
        FlexFusion(layout=layout, backend="dense").generate(dec, prompts, groups)
        assert dec.stats.prompt_tokens == expected, layout
        assert dec.stats.forward_calls <= dec.max_new_tokens + prefix_calls  # prefill, then one call per token


@pytest.mark.parametrize("backend", ["dense", "flex"])
def test_batch_shared_prefix_equals_prefix_per_group(tiny_lm, unshared, prompts, groups, backend):
    """Sharing the prefix's KV cache across the batch changes the cost, not the logits or the answers."""
    head = FlexFusion(layout="shared_prefix", backend=backend, compile=False)
    shared = tiny_lm.decoder.prefill(head.build_batch(tiny_lm.decoder, prompts, groups))
    whole = unshared.prefill(head.build_batch(unshared, prompts, groups))
    torch.testing.assert_close(shared, whole, atol=1e-4, rtol=1e-4)
    assert generations(head.generate(tiny_lm.decoder, prompts, groups)) == \
        generations(head.generate(unshared, prompts, groups))


def test_weighted_first_token_needs_confidences(tiny_lm, prompts, groups):
    with pytest.raises(ValueError, match=groups[0]["id"]):
        FlexFusion(fusion="weighted_avg", backend="dense").generate(tiny_lm.decoder, prompts, groups)


def test_unknown_option_names_the_flag():
    with pytest.raises(ValueError, match="layout"):
        FlexFusion(layout="interleaved")


def test_flex_compile_setting_does_not_outlive_the_call(tiny_lm, prompts, groups):
    """``compile`` is the head's own setting: it travels with the head's batch to the attention and leaves the
    process-wide default (compiled flex_attention) alone, for every later head and every other caller."""
    from torch.nn.attention.flex_attention import flex_attention

    dec = tiny_lm.decoder
    eager = FlexFusion(backend="flex", compile=False)
    eager.generate(dec, prompts, groups[:1])
    assert FlexSettings.function() is not flex_attention  # the default is still the compiled function
    assert FlexSettings.function(compile=False) is flex_attention
    assert eager.build_batch(dec, prompts, groups).flex_compile is False
    assert FlexFusion(backend="flex").build_batch(dec, prompts, groups).flex_compile is True
    assert FlexFusion(backend="dense").build_batch(dec, prompts, groups).flex_compile is None  # no flex: no say


def test_the_heads_compile_setting_reaches_every_layers_attention(tiny_lm, prompts, groups, monkeypatch):
    """The setting flows with the batch through the model call to each layer's attention (the real function runs;
    the wrapper only records what each layer asked for)."""
    asked = []
    real = FlexSettings.function.__func__

    def recording(cls, compile=True):
        asked.append(compile)
        return real(cls, compile)

    monkeypatch.setattr(FlexSettings, "function", classmethod(recording))
    FlexFusion(backend="flex", compile=False).generate(tiny_lm.decoder, prompts, groups[:1])
    assert asked == [False] * tiny_lm.lm.config.num_hidden_layers  # one prefill; decode steps run SDPA
