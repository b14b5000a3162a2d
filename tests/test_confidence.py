"""The confidence tool: one value in [0, 1] per paraphrase, the greedy answer of each prompt, reproducible samples,
reuse/resume, and the confidences driving ``weighted_avg`` exactly as the reference code's formula says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from selfens_pl.commands import confidence
from selfens_pl.commands.confidence import agreement, sample_seed
from selfens_pl.data.datamodule import ParaphraseDataModule, demo_few_shot, demo_path, load_confidences
from selfens_pl.data.prompts import PromptTokenizer
from selfens_pl.engine.batches import prompt_batch
from selfens_pl.engine.decoding import GreedyDecoder, no_fusion
from selfens_pl.engine.fusion import fuse_logits
from selfens_pl.engine.sampling import Sampler
from selfens_pl.heads import LogitFusion

M = 8
# one-token answers at temperature 0.5 make the random tiny model agree with itself sometimes: varied confidences
SETTINGS = {"num_samples": M, "temperature": 0.5, "model.max_new_tokens": 1, "seed": 3}


def _args(model_dir, output, **extra):
    args = {"model.model": str(model_dir), "data.path": "demo", "data.limit": 2, "batch_size": 3,
            "output": str(output), "trainer.accelerator": "cpu", **SETTINGS, **extra}
    return [f"--{k}={v}" for k, v in args.items()]


@pytest.fixture(scope="module")
def written(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("conf") / "confidences.jsonl"
    confidence.main(_args(tiny_model_dir, out))
    return out, out.read_text()


@pytest.fixture(scope="module")
def demo():
    data = ParaphraseDataModule(path="demo", limit=2)
    data.setup()
    return data


def test_agreement_uses_is_match():
    assert agreement("Juneau", ["Juneau", "juneau, alaska", "Anchorage", ""]) == 0.5
    assert agreement("", ["", "x"]) == 0.0  # an empty greedy answer agrees with nothing


def test_output_schema(written, demo):
    out, text = written
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["id"] for r in rows] == [g["id"] for g in demo.groups]
    for row, group in zip(rows, demo.groups):
        assert len(row["confidences"]) == len(group["paraphrases"]) == len(row["greedy"]) == 5
        assert all(0 <= c <= 1 and (c * M).is_integer() for c in row["confidences"])
    assert load_confidences(str(out)) == {r["id"]: r["confidences"] for r in rows}
    assert len({c for r in rows for c in r["confidences"]}) > 1, "the fixture should give varied confidences"


def test_greedy_and_samples_match_independent_runs(written, tiny_lm, demo):
    """The greedy row is the decoder's greedy answer; a paraphrase sampled alone with its seeds gives the same
    confidence (one prefill for 1 + M rows, independent of what else was in the batch)."""
    rows = [json.loads(line) for line in written[1].splitlines()]
    decoder = GreedyDecoder(tiny_lm.lm, tiny_lm.tokenizer, max_new_tokens=1, stop="\n")
    prompts = PromptTokenizer(tiny_lm.tokenizer, demo.template)
    sampler = Sampler(decoder, temperature=0.5, max_new_tokens=1)
    for row, group in zip(rows, demo.groups):
        for k, paraphrase in enumerate(group["paraphrases"]):
            batch = prompt_batch(decoder, prompts, [(group, paraphrase)])
            greedy = decoder.decode_n_tokens(batch, no_fusion, no_fusion)[0].prediction
            assert row["greedy"][k] == greedy
            seeds = [sample_seed(3, group["id"], k, j) for j in range(M)]
            gens = sampler.sample(prompt_batch(decoder, prompts, [(group, paraphrase)]), seeds, repeat=M)
            assert row["confidences"][k] == agreement(greedy, [g.prediction for g in gens])


def test_rerun_reuses_and_resumes(written, tiny_model_dir, tmp_path, monkeypatch, capsys):
    out, text = written
    copy = tmp_path / "c.jsonl"
    copy.write_text(text)
    real = confidence.load_model

    def no_model(*args, **kwargs):
        raise AssertionError("a finished file must not load the model")

    monkeypatch.setattr(confidence, "load_model", no_model)
    confidence.main(_args(tiny_model_dir, copy))
    assert "reused" in capsys.readouterr().out and copy.read_text() == text
    with pytest.raises(ValueError, match="settings"):
        confidence.main(_args(tiny_model_dir, copy, num_samples=M + 1))
    monkeypatch.setattr(confidence, "load_model", real)
    copy.write_text(text[: len(text) - 10])  # the last record half-written
    confidence.main(_args(tiny_model_dir, copy, batch_size=1))
    assert "half-written" in capsys.readouterr().out
    assert copy.read_text() == text  # same ids once each, same values from other batches


def test_weighted_avg_uses_the_written_confidences(written, tiny_lm, tmp_path):
    out, _ = written
    # the two scored demo groups as their own groups file: every group of it has confidences
    groups_file = tmp_path / "groups.jsonl"
    groups_file.write_text("".join(Path(demo_path()).read_text().splitlines(keepends=True)[:2]))
    data = ParaphraseDataModule(path=str(groups_file), few_shot=demo_few_shot(), confidences=str(out))
    data.setup()
    table = load_confidences(str(out))
    assert [g["confidences"] for g in data.groups] == [table[g["id"]] for g in data.groups]
    decoder = tiny_lm.decoder
    prompts = PromptTokenizer(tiny_lm.tokenizer, data.template)
    n = len(data.groups[0]["paraphrases"])
    batch = prompt_batch(decoder, prompts, [(g, p) for g in data.groups for p in g["paraphrases"]], n)
    logits = decoder.prefill(batch).reshape(len(data.groups), n, -1)  # first-token logits
    weights = torch.tensor([g["confidences"] for g in data.groups])
    fused = fuse_logits(logits, "weighted_avg", weights)
    for gi, group in enumerate(data.groups):  # the reference code's formula: sum_i c_i / sum_j c_j * logits_i
        total = sum(group["confidences"])
        by_hand = sum(c / total * logits[gi, i] for i, c in enumerate(group["confidences"]))
        torch.testing.assert_close(fused[gi], by_hand)
        # unequal confidences (every group of the fixture has them) move the distribution away from avg
        assert len(set(group["confidences"])) > 1, group["confidences"]
        assert not torch.allclose(fused[gi], logits[gi].mean(0))
    # and predict's decoding picks its first token from exactly that distribution
    head = LogitFusion("weighted_avg")
    batch = prompt_batch(decoder, prompts, [(g, p) for g in data.groups for p in g["paraphrases"]], n)
    batch.weights = batch.step_weights = weights
    gens = decoder.decode_n_tokens(batch, head.fuse, head.fuse)
    for gi, gen in enumerate(gens):
        first = int(fused[gi].argmax())
        assert first not in decoder.eos_ids  # a real first token, so the answer shows which one was picked
        assert gen.token_ids[:1] == [first]
    assert len(head.generate(decoder, prompts, data.groups)) == len(data.groups)


@pytest.mark.parametrize("task", ["webqa", "myriadlama"])
def test_configs_match_the_weighted_predict_configs(task, monkeypatch):
    """confidence_<task>.yaml writes the file weighted_{avg,max}_<task>.yaml read, for the same data settings."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    cfg = confidence.build_parser().parse_args(["--config", f"configs/confidence_{task}.yaml"])
    for method in ("weighted_avg", "weighted_max"):
        predict = yaml.safe_load((root / "configs" / f"{method}_{task}.yaml").read_text())
        data = dict(predict["data"])
        assert data.pop("confidences") == cfg.output
        data.pop("batch_size")
        assert {k: cfg.data[k] for k in data} == data
        assert cfg.model.max_new_tokens == predict["model"]["max_new_tokens"]
