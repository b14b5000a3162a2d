"""The decoder against Hugging Face ``generate``, batching, and the no-recompute guarantee."""

from __future__ import annotations

import pytest
import torch

from selfens_pl.data.prompts import PromptTokenizer
from selfens_pl.engine.batches import rows_batch
from selfens_pl.engine.decoding import GreedyDecoder, no_fusion
from selfens_pl.heads import LogitFusion, OriginHead, PerPromptHead


def test_origin_equals_hf_generate(tiny_lm, template, groups):
    prompts = PromptTokenizer(tiny_lm.tokenizer, template)
    records = OriginHead().generate(tiny_lm.decoder, prompts, groups)
    for group, rec in zip(groups, records):
        ids = torch.tensor([prompts.prompt_ids(group["paraphrases"][0])])
        out = tiny_lm.lm.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8,
                                  pad_token_id=tiny_lm.tokenizer.pad_token_id)
        expected = out[0, ids.shape[1]:].tolist()
        eos = tiny_lm.tokenizer.eos_token_id
        expected = expected[: expected.index(eos)] if eos in expected else expected
        assert rec["generation"] == tiny_lm.tokenizer.decode(expected, skip_special_tokens=True)
    # and token for token, through the decoder directly
    dec = tiny_lm.decoder
    gens = dec.decode_n_tokens(rows_batch(dec, [prompts.prompt_ids(groups[0]["paraphrases"][0])]), no_fusion,
                               no_fusion)
    ids = torch.tensor([prompts.prompt_ids(groups[0]["paraphrases"][0])])
    out = tiny_lm.lm.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8,
                              pad_token_id=tiny_lm.tokenizer.pad_token_id)
    assert gens[0].token_ids == [t for t in out[0, ids.shape[1]:].tolist()][: len(gens[0].token_ids)]
    assert len(gens[0].token_ids) > 0


def test_batched_equals_unbatched_ragged(tiny_lm, template, groups):
    prompts = PromptTokenizer(tiny_lm.tokenizer, template)
    lengths = {len(prompts.prompt_ids(p)) for g in groups for p in g["paraphrases"]}
    assert len(lengths) > 1, "the fixture must be ragged"
    for head in (OriginHead(), PerPromptHead(), LogitFusion("avg"), LogitFusion("max")):
        batched = head.generate(tiny_lm.decoder, prompts, groups)
        alone = [rec for g in groups for rec in head.generate(tiny_lm.decoder, prompts, [g])]
        assert [r["generation"] for r in batched] == [r["generation"] for r in alone], head.method


def test_logit_fusion_of_identical_paraphrases_equals_origin(tiny_lm, template, groups):
    prompts = PromptTokenizer(tiny_lm.tokenizer, template)
    origin = OriginHead().generate(tiny_lm.decoder, prompts, groups)
    same = [dict(g, paraphrases=[g["paraphrases"][0]] * 4, confidences=[0.2, 0.9, 0.5, 0.1]) for g in groups]
    for method in ("avg", "max", "weighted_avg", "weighted_max"):
        fused = LogitFusion(method).generate(tiny_lm.decoder, prompts, same)
        assert [r["generation"] for r in fused] == [r["generation"] for r in origin], method


@pytest.mark.parametrize("share_prefix", [True, False])
def test_prompt_is_encoded_once(tiny_lm, template, groups, share_prefix):
    """Forward calls and tokens fed: the prompts once (the shared prefix once per batch when sharing), then one
    token per row per step; never the prompt again."""
    prompts = PromptTokenizer(tiny_lm.tokenizer, template)
    dec = GreedyDecoder(tiny_lm.lm, tiny_lm.tokenizer, max_new_tokens=6, stop=None, share_prefix=share_prefix)
    dec.eos_ids = set()  # force all 6 steps so the count is exact
    p = len(prompts.prefix_ids)
    for head, rows_per_q in ((OriginHead(), 1), (LogitFusion("avg"), 3), (PerPromptHead(), 3)):
        dec.stats.__init__()
        head.generate(dec, prompts, groups)
        paraphrases = [x for g in groups for x in g["paraphrases"][:rows_per_q]]
        rows = len(paraphrases)
        if share_prefix:
            width = max(len(prompts.question_ids(x)) for x in paraphrases)
            assert dec.stats.forward_calls == 2 + 5, head.method
            assert dec.stats.tokens_fed == p + rows * width + 5 * rows, head.method
            assert dec.stats.prompt_tokens == p + sum(len(prompts.question_ids(x)) for x in paraphrases)
        else:
            width = max(len(prompts.prompt_ids(x)) for x in paraphrases)
            assert dec.stats.forward_calls == 1 + 5, head.method
            assert dec.stats.tokens_fed == rows * width + 5 * rows, head.method


def test_shared_prefix_cache_equals_full_prompts(tiny_lm, template, groups):
    """Encoding the prefix once and sharing its cache gives the same answers as encoding every prompt whole."""
    prompts = PromptTokenizer(tiny_lm.tokenizer, template)
    shared = GreedyDecoder(tiny_lm.lm, tiny_lm.tokenizer, max_new_tokens=8, stop=None, share_prefix=True)
    whole = GreedyDecoder(tiny_lm.lm, tiny_lm.tokenizer, max_new_tokens=8, stop=None, share_prefix=False)
    for head in (OriginHead(), PerPromptHead(), LogitFusion("avg")):
        a = head.generate(shared, prompts, groups)
        b = head.generate(whole, prompts, groups)
        assert [r["generation"] for r in a] == [r["generation"] for r in b], head.method


def test_trainer_precision_sets_the_model_dtype(tiny_model_dir, tmp_path):
    """dtype comes from the Trainer: ``bf16-true`` loads the LM in bfloat16 and predict runs in it."""
    import lightning as L

    from selfens_pl.data.datamodule import ParaphraseDataModule
    from selfens_pl.lit.module import SelfEnsembleLM

    lm = SelfEnsembleLM(model=str(tiny_model_dir), max_new_tokens=3)
    data = ParaphraseDataModule(limit=2, batch_size=2)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="bf16-true", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    records = trainer.predict(lm, data)
    assert lm.lm.dtype == torch.bfloat16
    assert len(records[0]) == 2 and all(isinstance(r["prediction"], str) for r in records[0])
