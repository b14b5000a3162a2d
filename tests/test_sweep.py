"""`python -m selfens_pl sweep`: shared-row decoding equals each head alone; one command writes table, chart and
runs; derived curves (mean single, oracle, vote, origin) equal their definitions; reruns reuse; bad input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfens_pl.commands import sweep
from selfens_pl.commands.report import load_run
from selfens_pl.commands.sweep_shared import SharedRowsDecoder, shared_generate, shares_rows
from selfens_pl.heads import FlexFusion, LogitFusion, OriginHead, PerPromptHead, VoteHead
from selfens_pl.prompts import MYRIADLAMA_FEW_SHOT, MYRIADLAMA_INSTRUCTION, PromptTemplate

FIXTURES = Path(__file__).parent / "fixtures"
GROUPED = FIXTURES / "myriadlama_grouped_tiny.jsonl"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def lama_groups():
    from selfens_pl.data import ParaphraseDataModule

    dm = ParaphraseDataModule(path=str(GROUPED), source="myriadlama", task="myriadlama", num_manual=3, num_auto=3)
    dm.setup()
    return dm.groups


@pytest.fixture(scope="module")
def shared_decoder(tiny_model_dir):
    from selfens_pl.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    return SharedRowsDecoder(model, tokenizer, max_new_tokens=6, stop=None, share_prefix=True)


def heads():
    return [LogitFusion("avg"), LogitFusion("max"), LogitFusion("prob_avg"), LogitFusion("entropy_weighted"),
            LogitFusion("avg", calibration="subject"), LogitFusion("prob_avg", calibration="question", prior_floor=0)]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_shared_rows_equal_each_head_alone(k, shared_decoder, lama_groups):
    """Every head's answers from one shared encoding are its own answers (head.generate), token for token; the
    shared run encodes each distinct prompt once (fewer prompt tokens than the heads one by one)."""
    prompts_ = __import__("selfens_pl.prompts", fromlist=["PromptTokenizer"]).PromptTokenizer(
        shared_decoder.tokenizer, PromptTemplate(MYRIADLAMA_INSTRUCTION, MYRIADLAMA_FEW_SHOT))
    cut = [dict(g, paraphrases=g["paraphrases"][:k]) for g in lama_groups]
    before = shared_decoder.stats.prompt_tokens
    together = shared_generate(shared_decoder, prompts_, heads(), lama_groups, k)
    shared_tokens = shared_decoder.stats.prompt_tokens - before
    alone_tokens = 0
    for head, recs in zip(heads(), together):
        before = shared_decoder.stats.prompt_tokens
        alone = head.generate(shared_decoder, prompts_, cut)
        alone_tokens += shared_decoder.stats.prompt_tokens - before
        assert [r["generation"] for r in recs] == [r["generation"] for r in alone], head.method
        assert [r["method"] for r in recs] == [head.method] * len(cut)
        assert [r["paraphrases"] for r in recs] == [g["paraphrases"] for g in cut]
        for a, b in zip(recs, alone):
            assert a["mean_prob"] == pytest.approx(b["mean_prob"], rel=1e-4)
    assert shared_tokens < alone_tokens / 2


def test_only_unweighted_logit_fusion_shares_rows():
    assert shares_rows(LogitFusion("avg")) and shares_rows(LogitFusion("max", calibration="subject"))
    assert not shares_rows(LogitFusion("weighted_avg")) and not shares_rows(FlexFusion())
    assert not shares_rows(VoteHead())


@pytest.fixture(scope="module")
def scored_file(tiny_model_dir, lama_groups, tmp_path_factory) -> Path:
    """The fixture facts with gold answers chosen from the tiny model's own per-paraphrase answers (paraphrase 1 of
    fact 0, 3 of fact 1, 0 of fact 2), so accuracies differ by paraphrase and K (a random model answers nothing
    right otherwise, and every curve would be 0)."""
    from selfens_pl.module import SelfEnsembleLM

    lm = SelfEnsembleLM(model=str(tiny_model_dir), max_new_tokens=4, stop=None)
    lm.configure_model()
    prompts = lm.prompts(PromptTemplate(MYRIADLAMA_INSTRUCTION, MYRIADLAMA_FEW_SHOT[:2]))
    answers = PerPromptHead().generate(lm.decoder, prompts, lama_groups)
    facts = [json.loads(line) for line in GROUPED.read_text().splitlines()]
    for f, (fact, index) in enumerate(zip(facts, [1, 3, 0])):
        fact["answers"] = [answers[6 * f + index]["prediction"]]
    path = tmp_path_factory.mktemp("scored") / "facts.jsonl"
    path.write_text("".join(json.dumps(f) + "\n" for f in facts))
    return path


def sweep_args(model_dir, out: Path, *extra, data: Path = GROUPED) -> list[str]:
    head_list = json.dumps([
        {"class_path": "selfens_pl.heads.LogitFusion", "init_args": {"method": "avg"}},
        {"class_path": "selfens_pl.heads.LogitFusion", "init_args": {"method": "entropy_weighted"}},
        {"class_path": "selfens_pl.heads.LogitFusion", "init_args": {"method": "avg", "calibration": "subject"}},
        {"class_path": "selfens_pl.heads.FlexFusion",
         "init_args": {"layout": "shared_prefix", "backend": "dense", "fusion": "prob_avg"}},
    ])
    return ["--model", str(model_dir), "--data.path", str(data), "--data.source", "myriadlama",
            "--data.task", "myriadlama", "--data.num_manual", "3", "--data.num_auto", "3",
            "--data.few_shot", json.dumps(MYRIADLAMA_FEW_SHOT[:2]), "--heads", head_list, "--k_max", "4",
            "--max_new_tokens", "4", "--stop", "null", "--batch_rows", "7", "--output_dir", str(out), *extra]


@pytest.fixture(scope="module")
def swept(tiny_model_dir, scored_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "out"
    sweep.main(sweep_args(tiny_model_dir, out, data=scored_file))
    return out


def test_sweep_writes_table_chart_and_runs(swept):
    assert (swept / "sweep.png").read_bytes()[:8] == PNG_MAGIC
    data = json.loads((swept / "sweep.json").read_text())
    methods = ["mean single paraphrase", "oracle (any paraphrase)", "vote", "origin", "avg", "entropy_weighted",
               "calibrated_avg", "flex_shared_prefix_prob_avg"]
    assert list(data["curves"]) == methods
    assert all(list(c) == ["1", "2", "3", "4"] for c in data["curves"].values())
    table = (swept / "sweep.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| method | K=1 | K=2 | K=3 | K=4 |")
    for method in methods:
        row = next(r for r in rows if r.startswith(f"| {method} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert [float(c) for c in cells[1:5]] == [round(100 * data["curves"][method][str(k)], 1) for k in range(1, 5)]
    for name in ["per_prompt_k4", "origin", "vote_k3", "avg_k1", "avg_k4", "calibrated_avg_k1",
                 "flex_shared_prefix_prob_avg_k2"]:
        run = load_run(swept / "runs" / name)  # readable by `report`
        assert run.summary["n"] == 3


def test_derived_curves_follow_their_definitions(swept, tiny_lm):
    by_id = {}
    for r in load_run(swept / "runs" / "per_prompt_k4").records:
        by_id.setdefault(r["id"], {})[r["paraphrase_index"]] = r
    data = json.loads((swept / "sweep.json").read_text())["curves"]
    assert len({round(v, 6) for v in data["mean single paraphrase"].values()}) > 1  # the curves are not flat
    for k in range(1, 5):
        single = sum(by_id[i][j]["correct"] for i in by_id for j in range(k)) / (3 * k)
        oracle = sum(any(by_id[i][j]["correct"] for j in range(k)) for i in by_id) / 3
        assert data["mean single paraphrase"][str(k)] == pytest.approx(single)
        assert data["oracle (any paraphrase)"][str(k)] == pytest.approx(oracle)
        votes = load_run(swept / "runs" / f"vote_k{k}").records
        assert all(v["agreement"] is not None and v["prediction"] in
                   [by_id[v["id"]][j]["prediction"] for j in range(k)] for v in votes)
    origin = {r["id"]: r for r in load_run(swept / "runs" / "origin").records}
    assert all(origin[i]["generation"] == by_id[i][0]["generation"] for i in by_id)
    avg1 = {r["id"]: r for r in load_run(swept / "runs" / "avg_k1").records}
    assert all(avg1[i]["generation"] == origin[i]["generation"] for i in by_id)
    for r in load_run(swept / "runs" / "avg_k3").records:  # agreement against the first 3 paraphrases' answers
        answers = [by_id[r["id"]][j]["prediction"] for j in range(3)]
        from selfens_pl.agreement import agreement_share
        assert r["agreement"] == pytest.approx(agreement_share(r["prediction"], answers))


def test_sweep_runs_equal_the_heads_run_directly(swept, tiny_model_dir, lama_groups):
    """The sweep's runs are what each head answers on the cut groups (origin, vote, per_prompt, a shared rule, flex)."""
    from selfens_pl.module import SelfEnsembleLM

    lm = SelfEnsembleLM(model=str(tiny_model_dir), max_new_tokens=4, stop=None)
    lm.configure_model()
    prompts = lm.prompts(PromptTemplate(MYRIADLAMA_INSTRUCTION, MYRIADLAMA_FEW_SHOT[:2]))
    cut = lambda k: [dict(g, paraphrases=g["paraphrases"][:k]) for g in lama_groups]  # noqa: E731
    checks = [("origin", OriginHead(), 4), ("per_prompt_k4", PerPromptHead(), 4), ("vote_k3", VoteHead(), 3),
              ("entropy_weighted_k2", LogitFusion("entropy_weighted"), 2),
              ("calibrated_avg_k1", LogitFusion("avg", calibration="subject"), 1),
              ("flex_shared_prefix_prob_avg_k3", FlexFusion(layout="shared_prefix", backend="dense",
                                                            fusion="prob_avg"), 3)]
    for name, head, k in checks:
        got = sorted((r["id"], r["paraphrase_index"] or 0, r["generation"])
                     for r in load_run(swept / "runs" / name).records)
        want = sorted((r["id"], r["paraphrase_index"] or 0, r["generation"])
                      for r in head.generate(lm.decoder, prompts, cut(k)))
        assert got == want, name


def test_rerun_reuses_every_run(swept, scored_file, tiny_model_dir, tmp_path, capsys, monkeypatch):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(swept, copy)
    capsys.readouterr()

    def no_decoding(*args, **kwargs):
        raise AssertionError("a finished run was decoded again")

    monkeypatch.setattr(SharedRowsDecoder, "decode_n_tokens", no_decoding)
    sweep.main(sweep_args(tiny_model_dir, copy, data=scored_file))
    assert "reused" in capsys.readouterr().out
    assert json.loads((copy / "sweep.json").read_text())["curves"] == json.loads((swept / "sweep.json").read_text())["curves"]


def test_sweep_errors_name_the_flag_or_record(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="fewer than --k_max=7"):
        sweep.main(sweep_args(tiny_model_dir, tmp_path / "a", "--k_max", "7"))
    two_avg = json.dumps([{"class_path": "selfens_pl.heads.LogitFusion", "init_args": {"method": "avg"}}] * 2)
    with pytest.raises(ValueError, match="--heads: .*'avg'"):
        sweep.main(sweep_args(tiny_model_dir, tmp_path / "b", "--heads", two_avg))
    with pytest.raises(ValueError, match="--batch_rows"):
        sweep.main(sweep_args(tiny_model_dir, tmp_path / "c", "--batch_rows", "0"))


def test_sweep_is_a_cli_verb():
    from selfens_pl.cli import TOOLS

    assert TOOLS["sweep"] == "selfens_pl.commands.sweep:main"


def test_shipped_sweep_config_instantiates(monkeypatch):
    """configs/sweep_myriadlama.yaml parses and builds every head (no model loaded)."""
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    parser = sweep.build_parser()
    cfg = parser.parse_args(["--config", "configs/sweep_myriadlama.yaml"])
    init = (getattr(parser, "instantiate", None) or parser.instantiate_classes)(cfg)
    labels = [sweep.head_label(h) for h in init.heads]
    assert labels == ["avg", "max", "prob_avg", "entropy_weighted", "calibrated_avg", "calibrated_prob_avg",
                      "flex_shared_prefix"]
    assert cfg.data.num_manual == 3 and cfg.data.num_auto == 3 and cfg.k_max == 6
