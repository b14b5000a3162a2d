"""Sampling (reproducible per seed, independent of the batch) and the paraphrase tool: checks and regeneration of
bad paraphrases (new seeds, short groups flagged, never padded), output schema, every head answering a written file,
reuse of a finished file, refusal of other settings and resume after an interrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from selfens_pl.commands import paraphrase
from selfens_pl.data.datamodule import ParaphraseDataModule, load_groups
from selfens_pl.data.prompts import PromptTokenizer
from selfens_pl.data.sources import load_webqa, webqa_groups
from selfens_pl.engine.batches import rows_batch
from selfens_pl.engine.decoding import GreedyDecoder, no_fusion
from selfens_pl.engine.sampling import Sampler, sample_from_logits
from selfens_pl.errors import UserError
from selfens_pl.scoring.paraphrase_checks import (
    CheckSettings,
    ParaphraseChecker,
    copy_key,
    file_statistics,
    text_failures,
)
from selfens_pl.scoring.paraphrasing import first_line, paraphrase_groups

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
        from selfens_pl.engine.batches import prompt_batch

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


# -- checking and regeneration -----------------------------------------------------------------------------------
Q1, Q2 = "what language is spoken in jamaica?", "who wrote hamlet?"
TABLE = {  # (question, seed) -> generation; k=3, seed=10: attempt a, slot r -> seed 10 + 3a + r
    (Q1, 10): "French language\nignored",  # not a question, too short, lost the content words
    (Q1, 11): "which language do people in jamaica speak?",  # kept (slot 1)
    (Q1, 12): "Which language do people in Jamaica speak ?",  # passes the text checks, repeats slot 1
    (Q1, 13): "in jamaica, what language do people speak?",  # slot 0, attempt 1: kept
    (Q1, 15): "What language is spoken in Jamaica?",  # slot 2, attempt 1: the original again
    (Q1, 18): "",  # slot 2, attempt 2
    (Q1, 21): "what currency is used in jamaica?",  # slot 2, attempt 3: another relation; slot 2 stays empty
    (Q2, 10): "who is the writer of hamlet?", (Q2, 11): "who was hamlet written by?",
    (Q2, 12): "who wrote hamlet",  # no question mark, and the original again
    (Q2, 15): "hamlet was written by whom?",  # slot 2, attempt 1: kept
}


def table_sampler(calls):
    def sample(items, seeds):
        calls.append([(q, row) for (_, q), row in zip(items, seeds)])
        return [[TABLE[(q, s)] for s in row] for (_, q), row in zip(items, seeds)]

    return sample


def test_paraphrase_groups_checks_and_regenerates_with_new_seeds():
    calls = []
    groups = [{"id": "a", "paraphrases": [Q1], "answers": ["x"]}, {"id": "b", "paraphrases": [Q2], "answers": []}]
    recs = paraphrase_groups(table_sampler(calls), groups, k=3, seed=10, max_retries=3, check=ParaphraseChecker())
    # attempt 0: one prompt per question, its k slots from one prefill; later: one prompt per pending slot
    assert calls == [
        [(Q1, [10, 11, 12]), (Q2, [10, 11, 12])],
        [(Q1, [13]), (Q1, [15]), (Q2, [15])],
        [(Q1, [18])],
        [(Q1, [21])],
    ]
    assert recs[0] == {
        "id": "a", "question": Q1, "answers": ["x"], "short": True,  # slot 2 never passed: written with 2, flagged
        "paraphrases": [Q1, "in jamaica, what language do people speak?", "which language do people in jamaica speak?"],
        "rejected": [
            {"text": "French language", "seed": 10, "attempt": 0, "failed": ["question", "type", "length", "content"]},
            {"text": "Which language do people in Jamaica speak ?", "seed": 12, "attempt": 0, "failed": ["duplicate"]},
            {"text": "What language is spoken in Jamaica?", "seed": 15, "attempt": 1, "failed": ["copy"]},
            {"text": "", "seed": 18, "attempt": 2, "failed": ["empty"]},
            {"text": "what currency is used in jamaica?", "seed": 21, "attempt": 3, "failed": ["content"]},
        ]}
    assert recs[1] == {
        "id": "b", "question": Q2, "answers": [], "short": False,
        "paraphrases": [Q2, "who is the writer of hamlet?", "who was hamlet written by?", "hamlet was written by whom?"],
        "rejected": [{"text": "who wrote hamlet", "seed": 12, "attempt": 0, "failed": ["question", "copy"]}]}
    # fewer retries: fewer attempts, the slot left empty; batching never changes a record
    calls.clear()
    one = paraphrase_groups(table_sampler(calls), groups[1:], k=3, seed=10, max_retries=1, check=ParaphraseChecker())
    assert one == recs[1:] and len(calls) == 2
    no_retry = paraphrase_groups(table_sampler([]), groups[1:], 3, 10, 0, ParaphraseChecker())[0]
    assert no_retry["paraphrases"] == [Q2, "who is the writer of hamlet?", "who was hamlet written by?"]
    assert no_retry["short"]


def test_without_text_checks_only_empty_copy_and_duplicate_reject():
    groups = [{"id": "a", "paraphrases": [Q1], "answers": []}]
    rec = paraphrase_groups(table_sampler([]), groups, 3, 10, 3)[0]  # the default check: no text checks
    assert rec["paraphrases"] == [Q1, "French language", "which language do people in jamaica speak?",
                                  "what currency is used in jamaica?"]
    assert [x["failed"] for x in rec["rejected"]] == [["duplicate"], ["copy"], ["empty"]]


def test_first_line():
    assert first_line("\n  Foo bar \nmore") == "Foo bar"


# -- the tool end to end ------------------------------------------------------------------------------------------
def _args(model_dir, output, **extra):
    args = {"model.model": str(model_dir), "data.path": str(WEBQA), "data.source": "webqa", "data.split": "train",
            "data.limit": 3, "num_paraphrases": 3, "model.max_new_tokens": 6, "data.batch_size": 2, "max_retries": 2,
            "output": str(output), "trainer.accelerator": "cpu", **extra}
    return [f"--{k}={v}" for k, v in args.items()]


@pytest.fixture(scope="module")
def written(tiny_model_dir, tmp_path_factory):
    """The tiny model's paraphrases with the text checks off (random weights write no questions), so that groups
    keep paraphrases, and with the default checks."""
    out = tmp_path_factory.mktemp("para")
    loose, strict = out / "loose.jsonl", out / "strict.jsonl"
    paraphrase.main(_args(tiny_model_dir, loose, checks="[]"))
    paraphrase.main(_args(tiny_model_dir, strict, **{"data.start": 1}))
    return loose, loose.read_text(), strict


def test_output_schema(written, tiny_model_dir):
    out, text, _ = written
    assert text.endswith("\n")
    rows = [json.loads(line) for line in text.splitlines()]
    expected = webqa_groups(load_webqa(str(WEBQA), "train"), id_prefix="webqa-train")[:3]
    assert [r["id"] for r in rows] == [g["id"] for g in expected] == ["webqa-train-0", "webqa-train-1",
                                                                      "webqa-train-2"]
    for row, group in zip(rows, expected):
        assert set(row) == {"id", "question", "answers", "paraphrases", "short", "rejected", "paraphraser"}
        assert row["paraphraser"] == str(tiny_model_dir)
        assert row["question"] == row["paraphrases"][0] == group["paraphrases"][0]
        assert row["answers"] == group["answers"]
        assert 1 <= len(row["paraphrases"]) <= 4 and all(p.strip() for p in row["paraphrases"])
        assert row["short"] == (len(row["paraphrases"]) < 4)
        keys = [copy_key(p) for p in row["paraphrases"]]
        assert len(set(keys)) == len(keys)  # no copy of the original, no duplicate
        for x in row["rejected"]:
            assert x["failed"] and set(x["failed"]) <= {"empty", "copy", "duplicate"}
    settings = json.loads(paraphrase.settings_path(out).read_text())
    assert settings["model"] == str(tiny_model_dir) and settings["checks"] == []
    groups = load_groups(str(out))
    assert [len(g["paraphrases"]) for g in groups] == [len(r["paraphrases"]) for r in rows]
    data = ParaphraseDataModule(path=str(out), few_shot=[])
    data.setup()
    assert data.groups[0]["paraphrases"] == rows[0]["paraphrases"]


def test_checked_records_say_why(written):
    _, _, strict = written
    rows = [json.loads(line) for line in strict.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["webqa-train-1", "webqa-train-2", "webqa-train-3"]  # --start 1
    settings = CheckSettings()
    for row in rows:
        for p in row["paraphrases"][1:]:  # whatever was kept passes every check
            assert text_failures(row["question"], p, settings) == []
        assert len(row["rejected"]) >= 3 * 3 - (len(row["paraphrases"]) - 1)  # 3 attempts for each empty slot
        for x in row["rejected"]:  # every rejection names exactly the checks the text fails
            assert x["failed"] == (text_failures(row["question"], x["text"], settings) or ["duplicate"])
    # random weights write no question: every group is short, down to the original alone, and flagged
    assert all(r["short"] for r in rows)


def test_written_groups_answer_through_every_head(written, tiny_lm, template):
    """A file the tool wrote (groups of unequal size) is answered by every head, each group as it is alone."""
    from selfens_pl.heads import FlexFusion, LogitFusion, OriginHead, PerPromptHead

    out, _, strict = written
    groups = load_groups(str(out)) + load_groups(str(strict))[:1]
    assert len({len(g["paraphrases"]) for g in groups}) > 1, "the fixture should be ragged"
    prompts = tiny_lm.prompts(template)
    for head in (OriginHead(), PerPromptHead(), LogitFusion("avg"), LogitFusion("max"),
                 FlexFusion(layout="shared_prefix", backend="dense"), FlexFusion(layout="concat", backend="dense")):
        records = head.generate(tiny_lm.decoder, prompts, groups)
        if isinstance(head, PerPromptHead):
            assert len(records) == sum(len(g["paraphrases"]) for g in groups)
            continue
        alone = [head.generate(tiny_lm.decoder, prompts, [g])[0]["generation"] for g in groups]
        assert [r["generation"] for r in records] == alone


def test_rerun_reuses_the_file(written, tiny_model_dir, tmp_path, monkeypatch, capsys):
    out, text, _ = written
    copy = tmp_path / "p.jsonl"
    copy.write_text(text)
    paraphrase.settings_path(copy).write_text(paraphrase.settings_path(out).read_text())

    def no_model(*args, **kwargs):
        raise AssertionError("a finished file must not load the model")

    monkeypatch.setattr(paraphrase, "load_model", no_model)
    paraphrase.main(_args(tiny_model_dir, copy, checks="[]"))
    printed = capsys.readouterr().out
    assert "reused" in printed and "paraphrases kept" in printed  # the statistics are printed
    assert copy.read_text() == text
    for flag in ({"num_paraphrases": 2}, {"temperature": 0.3}, {}):  # other settings (the default checks too)
        with pytest.raises(ValueError, match="written with other settings"):
            paraphrase.main(_args(tiny_model_dir, copy, **({"checks": "[]"} | flag if flag else {})))
    paraphrase.settings_path(copy).unlink()
    with pytest.raises(ValueError, match="no p.jsonl.settings.json"):
        paraphrase.main(_args(tiny_model_dir, copy, checks="[]"))


def test_resume_after_truncated_file(written, tiny_model_dir, tmp_path, capsys):
    out, text, _ = written
    lines = text.splitlines(keepends=True)
    copy = tmp_path / "p.jsonl"
    copy.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # record 0, half of record 1, record 2 missing
    paraphrase.settings_path(copy).write_text(paraphrase.settings_path(out).read_text())
    paraphrase.main(_args(tiny_model_dir, copy, checks="[]"))
    printed = capsys.readouterr().out
    assert "half-written" in printed and "resuming" in printed
    rows = [json.loads(line) for line in copy.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["webqa-train-0", "webqa-train-1", "webqa-train-2"]  # no duplicate ids
    # same seeds, other batches (records 1 and 2 now share one): the same paraphrases as the uninterrupted run
    assert copy.read_text() == text
    load_groups(str(copy))


def test_bad_flags(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="--checks=.*unknown check"):
        paraphrase.main(_args(tiny_model_dir, tmp_path / "x.jsonl", checks="[grammar]"))
    with pytest.raises(ValueError, match="--data.start=6 skips every group: .* holds 6"):
        paraphrase.main(_args(tiny_model_dir, tmp_path / "x.jsonl", **{"data.start": 6}))
    assert not (tmp_path / "x.jsonl").exists()


def test_configs_parse(monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = paraphrase.build_parser().parse_args(["--config", "configs/paraphrase_webqa.yaml"])
    assert (cfg.data.path, cfg.data.source, cfg.data.split, cfg.data.start, cfg.data.limit, cfg.num_paraphrases) == (
        "../shared/data/webquestions/train.jsonl", "webqa", "train", 0, 200, 4)
    assert (cfg.temperature, cfg.top_p) == (paraphrase.DEFAULT_TEMPERATURE, paraphrase.DEFAULT_TOP_P)
    assert cfg.checks == ["question", "type", "length", "content", "numbers", "new"] and cfg.output is None
    assert (cfg.min_content, cfg.max_new) == (CheckSettings.min_content, CheckSettings.max_new)  # the defaults
    seed = paraphrase.build_parser().parse_args(["--config", "configs/paraphrase_seed_webqa.yaml"])
    assert (seed.temperature, seed.top_p, seed.model.max_new_tokens) == (1.5, 0.9, 30)  # the reference code's values
    assert seed.output != cfg.output
    assert paraphrase.source_tag(cfg.data.path, cfg.data.split) == "webquestions"
    assert paraphrase.source_tag("stanfordnlp/web_questions", "test") == "web_questions"
    assert paraphrase.model_tag("smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert paraphrase.model_tag("Qwen/Qwen2.5-7B-Instruct") == "Qwen--Qwen2.5-7B-Instruct"


def test_predict_summary_states_the_paraphrase_file(written, tiny_model_dir, tmp_path, monkeypatch, capsys,
                                                   one_thread):
    """predict on a file ``paraphrase`` wrote: the summary holds the file's statistics over the answered ids and the
    run prints them under its table; a groups file ``paraphrase`` did not write gets neither."""
    from test_cli import predict_in_process
    from test_ddp import write_config, write_groups

    from selfens_pl.lit.writer import SUMMARY
    from selfens_pl.scoring.paraphrase_checks import paraphrase_statistics

    out, text, _ = written
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, out,
                          head={"class_path": "selfens_pl.heads.LogitFusion", "init_args": {"method": "avg"}})
    printed = predict_in_process(monkeypatch, capsys, "--config", str(config), "--data.limit", "2",
                                 "--output_dir", str(tmp_path / "run"))
    summary = json.loads((tmp_path / "run" / SUMMARY).read_text())
    expected = paraphrase_statistics([json.loads(line) for line in text.splitlines()][:2])
    assert summary["paraphrase_file"] == json.loads(json.dumps({"path": str(out), **expected}))
    assert f"paraphrases ({out}, by {tiny_model_dir}): 2 questions, {expected['kept']} paraphrases kept" in printed

    write_groups(tmp_path / "plain.jsonl", 2)
    config = write_config(tmp_path / "plain.yaml", tiny_model_dir, tmp_path / "plain.jsonl")
    printed = predict_in_process(monkeypatch, capsys, "--config", str(config), "--output_dir", str(tmp_path / "p"))
    assert "paraphrase_file" not in json.loads((tmp_path / "p" / SUMMARY).read_text())
    assert "paraphrases (" not in printed


def test_file_statistics_raises_on_a_bad_file_and_skips_only_a_file_paraphrase_did_not_write(tmp_path):
    """The statistics of a paraphrase file are left out only when its records show that ``paraphrase`` did not
    write it (no ``rejected`` field); a file that cannot be read is an error naming it, never a silent ``None``."""
    record = {"id": "q0", "paraphrases": ["a?", "b?"], "rejected": [], "short": False, "paraphraser": "m"}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(record) + "\n" + '{"id": "q1", "para\n' + json.dumps({**record, "id": "q2"}) + "\n")
    with pytest.raises(UserError, match=rf"^{path}: line 2: invalid JSON"):
        file_statistics(path)
    with pytest.raises(FileNotFoundError):
        file_statistics(tmp_path / "missing.jsonl")
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"id": "q0", "paraphrases": ["a?"], "answers": []}) + "\n")
    assert file_statistics(plain) is None  # records without 'rejected': not written by paraphrase
    path.write_text(json.dumps(record) + "\n")
    assert file_statistics(path)["questions"] == 1
