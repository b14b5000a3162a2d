"""Sampling (reproducible per seed, independent of the batch) and the paraphrase tool: detection and regeneration
of bad paraphrases, output schema, reuse of a finished file and resume after an interrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from selfens_pl.commands import paraphrase
from selfens_pl.data import ParaphraseDataModule, load_groups
from selfens_pl.decoding import GreedyDecoder, no_fusion
from selfens_pl.heads.base import rows_batch
from selfens_pl.commands.paraphrase import find_bad, first_line, paraphrase_groups
from selfens_pl.prompts import PromptTokenizer
from selfens_pl.sampling import Sampler, sample_from_logits
from selfens_pl.sources import load_webqa, webqa_groups

ROOT = Path(__file__).resolve().parents[1]
WEBQA = ROOT / "tests" / "fixtures" / "webqa_tiny.jsonl"


# -- sampling -----------------------------------------------------------------------------------------------------
def test_sample_from_logits_rules():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 3))
    u = torch.tensor([0.0, 0.55, 0.9])
    assert sample_from_logits(logits, u).tolist() == [0, 1, 2]  # inverse CDF over [0.5, 0.8, 0.95, 1]
    # top_p=0.8 keeps {0, 1} (mass before token 2 is 0.8): renormalised CDF [0.625, 1]
    assert sample_from_logits(logits, u, top_p=0.8).tolist() == [0, 0, 1]
    assert sample_from_logits(logits, u, top_p=0.1).tolist() == [0, 0, 0]  # the most likely token always stays
    assert sample_from_logits(logits, u, temperature=0).tolist() == [0, 0, 0]
    greedy = torch.tensor([False, True, False])
    assert sample_from_logits(logits, u, greedy=greedy).tolist() == [0, 0, 2]
    almost_one = torch.tensor([1 - 1e-12] * 3)  # never lands past the last token with mass
    assert sample_from_logits(logits, almost_one, top_p=0.8).tolist() == [1, 1, 1]


@pytest.fixture(scope="module")
def decoder(tiny_lm):
    return GreedyDecoder(tiny_lm.lm, tiny_lm.tokenizer, max_new_tokens=8, stop=None)


@pytest.mark.parametrize("share_prefix", [True, False])
def test_sampling_reproducible_and_batch_independent(decoder, template, groups, share_prefix):
    decoder.share_prefix = share_prefix
    try:
        prompts = PromptTokenizer(decoder.tokenizer, template)
        sampler = Sampler(decoder, temperature=1.5, top_p=0.9, max_new_tokens=8, stop=None)
        a, b, c = (g["paraphrases"][0] for g in groups)
        items = lambda qs: [(groups[0], q) for q in qs]  # noqa: E731
        from selfens_pl.heads.base import prompt_batch

        alone = sampler.sample(prompt_batch(decoder, prompts, items([a])), [1, 2, 3], repeat=3)
        again = sampler.sample(prompt_batch(decoder, prompts, items([a])), [1, 2, 3], repeat=3)
        mixed = sampler.sample(prompt_batch(decoder, prompts, items([c, a, b])),
                               [7, 8, 9, 1, 2, 3, 4, 5, 6], repeat=3)
        assert [g.token_ids for g in alone] == [g.token_ids for g in again]
        assert [g.token_ids for g in alone] == [g.token_ids for g in mixed[3:6]]
        assert len({tuple(g.token_ids) for g in alone}) > 1  # different seeds, different samples
        # a None seed is a greedy row: the decoder's own greedy answer
        rows = sampler.sample(prompt_batch(decoder, prompts, items([a])), [None, 5], repeat=2)
        batch = prompt_batch(decoder, prompts, items([a]))
        assert rows[0].token_ids == decoder.decode_n_tokens(batch, no_fusion, no_fusion)[0].token_ids
    finally:
        decoder.share_prefix = True


def test_sampler_stops_per_row(decoder, template, groups):
    prompts = PromptTokenizer(decoder.tokenizer, template)
    ids = [prompts.prompt_ids(g["paraphrases"][0]) for g in groups]
    newline = Sampler(decoder, temperature=1.5, max_new_tokens=8, stop="\n")
    gens = newline.sample(rows_batch(decoder, ids), list(range(30)), repeat=10)
    assert len(gens) == 30
    for gen in gens:
        assert len(gen.token_ids) <= 8
        before_last = decoder.tokenizer.decode(gen.token_ids[:-1], skip_special_tokens=True)
        assert "\n" not in before_last.lstrip()  # stopped at the first newline after the answer started
        assert decoder.tokenizer.eos_token_id not in gen.token_ids


# -- detection and regeneration -----------------------------------------------------------------------------------
def test_find_bad_and_first_line():
    original = "What is X?"
    assert find_bad(original, ["what  is x?", "Which X?", " WHICH x? ", "", "  ", "Other"]) == [0, 2, 3, 4]
    assert find_bad(original, ["a", "b"]) == []
    assert first_line("\n  Foo bar \nmore") == "Foo bar"


def test_paraphrase_groups_regenerates_with_new_seeds():
    q1, q2 = "What is X?", "Where is Y?"
    table = {  # (question, seed) -> generation; k=3, seed=10: attempt a, slot r -> seed 10 + 3a + r
        (q1, 10): "what  is x?\nignored", (q1, 11): "Which X?", (q1, 12): "which x?",  # dup original, ok, dup
        (q1, 13): "Tell me X",  # slot 0, attempt 1
        (q1, 15): "", (q1, 18): "TELL ME x", (q1, 21): " ",  # slot 2 stays bad: empty, duplicate, empty
        (q2, 10): "Y is where?", (q2, 11): "y is WHERE?", (q2, 12): "Locate Y",
        (q2, 14): "Y IS where?", (q2, 17): "y is where?", (q2, 20): "Y is  where?",  # slot 1 stays a duplicate
    }
    calls = []

    def sample(items, seeds):
        calls.append([(q, s) for (_, q), row in zip(items, seeds) for s in row])
        return [[table.get((q, s), "") for s in row] for (_, q), row in zip(items, seeds)]

    groups = [{"id": "a", "paraphrases": [q1], "answers": ["x"]}, {"id": "b", "paraphrases": [q2], "answers": []}]
    recs = paraphrase_groups(sample, groups, k=3, seed=10, max_retries=3)
    assert calls == [
        [(q1, 10), (q1, 11), (q1, 12), (q2, 10), (q2, 11), (q2, 12)],
        [(q1, 13), (q1, 15), (q2, 14)],
        [(q1, 18), (q2, 17)],
        [(q1, 21), (q2, 20)],
    ]
    assert recs[0]["paraphrases"] == [q1, "Tell me X", "Which X?", q1]  # still empty: the original stands in
    assert len(recs[0]["issues"]) == 1 and "paraphrases[3]" in recs[0]["issues"][0] and "empty" in recs[0]["issues"][0]
    assert recs[1]["paraphrases"] == [q2, "Y is where?", "Y is  where?", "Locate Y"]
    assert len(recs[1]["issues"]) == 1 and "duplicate" in recs[1]["issues"][0]
    assert recs[0]["id"] == "a" and recs[0]["question"] == q1 and recs[0]["answers"] == ["x"]
    # nothing bad: one call, no retries
    calls.clear()
    table.update({(q1, 10): "A", (q1, 11): "B", (q1, 12): "C"})
    assert paraphrase_groups(sample, groups[:1], 3, 10, 3)[0] == {
        "id": "a", "question": q1, "answers": ["x"], "paraphrases": [q1, "A", "B", "C"], "issues": []}
    assert len(calls) == 1


# -- the tool end to end ------------------------------------------------------------------------------------------
def _args(model_dir, output, **extra):
    args = {"model": str(model_dir), "source": str(WEBQA), "split": "train", "limit": 3, "num_paraphrases": 3,
            "max_new_tokens": 6, "batch_size": 2, "max_retries": 2, "output": str(output), "device": "cpu", **extra}
    return [f"--{k}={v}" for k, v in args.items()]


@pytest.fixture(scope="module")
def written(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("para") / "p.jsonl"
    paraphrase.main(_args(tiny_model_dir, out))
    return out, out.read_text()


def test_output_schema(written):
    out, text = written
    assert text.endswith("\n")
    rows = [json.loads(line) for line in text.splitlines()]
    expected = webqa_groups(load_webqa(str(WEBQA), "train"), id_prefix="webqa-train")[:3]
    assert [r["id"] for r in rows] == [g["id"] for g in expected] == ["webqa-train-0", "webqa-train-1",
                                                                      "webqa-train-2"]
    for row, group in zip(rows, expected):
        assert set(row) == {"id", "question", "answers", "paraphrases", "issues"}
        assert row["question"] == row["paraphrases"][0] == group["paraphrases"][0]
        assert row["answers"] == group["answers"]
        assert len(row["paraphrases"]) == 4 and all(p.strip() for p in row["paraphrases"])
        # every paraphrase that is still a duplicate is reported; without issues all K are unique
        assert len(find_bad(row["question"], row["paraphrases"][1:])) == len(row["issues"])
    groups = load_groups(str(out))
    assert [len(g["paraphrases"]) for g in groups] == [4, 4, 4]
    data = ParaphraseDataModule(path=str(out), few_shot=[])
    data.setup()
    assert data.groups[0]["paraphrases"] == rows[0]["paraphrases"]


def test_rerun_reuses_the_file(written, tiny_model_dir, tmp_path, monkeypatch, capsys):
    out, text = written
    copy = tmp_path / "p.jsonl"
    copy.write_text(text)

    def no_model(*args, **kwargs):
        raise AssertionError("a finished file must not load the model")

    monkeypatch.setattr(paraphrase, "load_decoder", no_model)
    paraphrase.main(_args(tiny_model_dir, copy))
    assert "reused" in capsys.readouterr().out
    assert copy.read_text() == text
    with pytest.raises(ValueError, match="num_paraphrases"):  # a file written with other settings is refused
        paraphrase.main(_args(tiny_model_dir, copy, num_paraphrases=2))


def test_resume_after_truncated_file(written, tiny_model_dir, tmp_path, capsys):
    out, text = written
    lines = text.splitlines(keepends=True)
    copy = tmp_path / "p.jsonl"
    copy.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # record 0, half of record 1, record 2 missing
    paraphrase.main(_args(tiny_model_dir, copy))
    printed = capsys.readouterr().out
    assert "half-written" in printed and "resuming" in printed
    rows = [json.loads(line) for line in copy.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["webqa-train-0", "webqa-train-1", "webqa-train-2"]  # no duplicate ids
    # same seeds, other batches (records 1 and 2 now share one): the same paraphrases as the uninterrupted run
    assert copy.read_text() == text
    load_groups(str(copy))


def test_config_parses(monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = paraphrase.build_parser().parse_args(["--config", "configs/paraphrase_webqa.yaml"])
    assert (cfg.source, cfg.split, cfg.limit, cfg.num_paraphrases) == ("../shared/data/webquestions/train.jsonl",
                                                                       "train", 20, 4)
    assert (cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.output) == (1.5, 0.9, 30, None)
    assert paraphrase.source_tag(cfg.source, cfg.split) == "webquestions"
    assert paraphrase.source_tag("stanfordnlp/web_questions", "test") == "web_questions"
    assert paraphrase.model_tag("smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert paraphrase.model_tag("Qwen/Qwen2.5-7B-Instruct") == "Qwen--Qwen2.5-7B-Instruct"
