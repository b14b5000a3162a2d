"""`python -m selfens_pl sweep`: every run derived from the one engine pass equals the head run directly on the cut
groups (K paraphrases x M few-shot blocks), token for token; tables, charts and runs are written; baselines follow
their definitions; reruns reuse; bad input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfens_pl.commands import sweep
from selfens_pl.commands.report import load_run
from selfens_pl.data.demos import cut_blocks
from selfens_pl.data.prompts import MYRIADLAMA_FEW_SHOT, MYRIADLAMA_INSTRUCTION, PromptTemplate
from selfens_pl.engine.decoding import GreedyDecoder
from selfens_pl.heads import CascadeHead, FlexFusion, LogitFusion, OriginHead, PerPromptHead, RerankHead, VoteHead
from selfens_pl.sweep.plan import plan_for

FIXTURES = Path(__file__).parent / "fixtures"
GROUPED = FIXTURES / "myriadlama_grouped_tiny.jsonl"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SHOTS = MYRIADLAMA_FEW_SHOT[:2]


@pytest.fixture(scope="module")
def scored_file(tiny_model_dir, tmp_path_factory) -> Path:
    """The fixture facts with gold answers chosen from the tiny model's own per-paraphrase answers (paraphrase 1 of
    fact 0, 3 of fact 1, 0 of fact 2), so accuracies differ by method and K (a random model answers nothing right
    otherwise, and every number would be 0)."""
    from selfens_pl.data.datamodule import ParaphraseDataModule
    from selfens_pl.lit.module import SelfEnsembleLM

    dm = ParaphraseDataModule(path=str(GROUPED), source="myriadlama", task="myriadlama", num_manual=3, num_auto=3)
    dm.setup()
    lm = SelfEnsembleLM(model=str(tiny_model_dir), max_new_tokens=4, stop=None)
    lm.configure_model()
    answers = PerPromptHead().generate(lm.decoder, lm.prompts(PromptTemplate(MYRIADLAMA_INSTRUCTION, SHOTS)), dm.groups)
    facts = [json.loads(line) for line in GROUPED.read_text().splitlines()]
    for f, (fact, index) in enumerate(zip(facts, [1, 3, 0])):
        fact["answers"] = [answers[6 * f + index]["prediction"]]
    path = tmp_path_factory.mktemp("scored") / "facts.jsonl"
    path.write_text("".join(json.dumps(f) + "\n" for f in facts))
    return path


HEADS = [
    {"class_path": "selfens_pl.heads.LogitFusion", "init_args": {"method": "avg"}},
    {"class_path": "selfens_pl.heads.LogitFusion", "init_args": {"method": "entropy_weighted"}},
    {"class_path": "selfens_pl.heads.RerankHead", "init_args": {"rule": "mixture"}},
    {"class_path": "selfens_pl.heads.RerankHead", "init_args": {"rule": "vote"}},
    {"class_path": "selfens_pl.heads.CascadeHead", "init_args": {"first": 2, "threshold": 0.75}},
    {"class_path": "selfens_pl.heads.FlexFusion",
     "init_args": {"layout": "shared_prefix", "backend": "dense", "fusion": "prob_avg"}},
]


def sweep_args(model_dir, out: Path, *extra, data: Path = GROUPED) -> list[str]:
    return ["--model.model", str(model_dir), "--data.path", str(data), "--data.source", "myriadlama",
            "--data.task", "myriadlama", "--data.num_manual", "3", "--data.num_auto", "3",
            "--data.few_shot", json.dumps(SHOTS), "--data.few_shot_pool", str(GROUPED),
            "--heads", json.dumps(HEADS), "--ks", "1,2,4", "--ms", "1,2", "--resamples", "200",
            "--model.max_new_tokens", "4", "--model.stop", "null", "--batch_rows", "7", "--output_dir", str(out), *extra]


@pytest.fixture(scope="module")
def swept(tiny_model_dir, scored_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "out"
    sweep.main(sweep_args(tiny_model_dir, out, data=scored_file))
    return out


@pytest.fixture(scope="module")
def direct(tiny_model_dir, scored_file):
    """``(lm, prompts, groups)`` to run the heads directly on the same groups (blocks attached as the sweep does)."""
    from selfens_pl.data.datamodule import ParaphraseDataModule
    from selfens_pl.lit.module import SelfEnsembleLM

    dm = ParaphraseDataModule(path=str(scored_file), source="myriadlama", task="myriadlama", num_manual=3,
                              num_auto=3, few_shot=SHOTS, few_shot_pool=str(GROUPED), demo_blocks=2)
    dm.setup()
    lm = SelfEnsembleLM(model=str(tiny_model_dir), max_new_tokens=4, stop=None)
    lm.configure_model()
    return lm, lm.prompts(dm.template), dm.groups


def test_sweep_writes_tables_charts_and_runs(swept):
    for png in ("sweep.png", "sweep_cost.png"):
        assert (swept / png).read_bytes()[:8] == PNG_MAGIC
    data = json.loads((swept / "sweep.json").read_text())
    assert list(data["accuracy"])[:4] == ["mean single paraphrase", "mean single member", "oracle (any member)",
                                          "origin"]
    assert set(data["accuracy"]["rerank_mixture"]) == {f"k{k}_m{m}" for k in (1, 2, 4) for m in (1, 2)}
    assert set(data["accuracy"]["avg"]) == {"k2_m1", "k4_m1", "k1_m2", "k2_m2", "k4_m2"}  # K x M = 1 is origin
    table = (swept / "sweep.md").read_text()
    assert "| method | K=1 M=1 | K=2 M=1 | K=4 M=1 | K=1 M=2 | K=2 M=2 | K=4 M=2 |" in table
    assert "paired bootstrap 95% intervals (200 resamples" in table
    row = next(line for line in table.splitlines() if line.startswith("| rerank_mixture | 4 | 2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[3]) == round(100 * data["accuracy"]["rerank_mixture"]["k4_m2"], 1)
    assert cells[6] == "8.00"  # decoded rows: 4 paraphrases x 2 blocks
    for name in ["per_prompt_k4_m2", "origin_k1_m1", "vote_k2_m2", "avg_k4_m1", "rerank_vote_k1_m2",
                 "flex_shared_prefix_prob_avg_k2_m1"]:
        run = load_run(swept / "runs" / name)  # readable by `report`
        assert run.summary["n"] == 3 and "cost" in run.summary


def test_baselines_follow_their_definitions(swept):
    data = json.loads((swept / "sweep.json").read_text())["accuracy"]
    members = {}
    for r in load_run(swept / "runs" / "per_prompt_k4_m2").records:
        members.setdefault(r["id"], {})[(r["paraphrase_index"], r["block_index"])] = r["correct"]
    assert len({round(v, 6) for v in data["mean single paraphrase"].values()}) > 1  # not flat
    for k in (1, 2, 4):
        for m in (1, 2):
            single = sum(c[(p, 0)] for c in members.values() for p in range(k)) / (3 * k)
            member = sum(c[(p, b)] for c in members.values() for p in range(k) for b in range(m)) / (3 * k * m)
            oracle = sum(any(c[(p, b)] for p in range(k) for b in range(m)) for c in members.values()) / 3
            assert data["mean single paraphrase"][f"k{k}_m{m}"] == pytest.approx(single)
            assert data["mean single member"][f"k{k}_m{m}"] == pytest.approx(member)
            assert data["oracle (any member)"][f"k{k}_m{m}"] == pytest.approx(oracle)
    gains = json.loads((swept / "sweep.json").read_text())["gains"]
    row = next(g for g in gains if g["method"] == "vote" and g["k"] == 4 and g["m"] == 2)
    assert row["vs_origin"]["diff"] == pytest.approx(data["vote"]["k4_m2"] - data["origin"]["k4_m2"])
    assert row["vs_single"]["diff"] == pytest.approx(data["vote"]["k4_m2"] - data["mean single paraphrase"]["k4_m2"])


CHECKS = [("origin_k1_m1", OriginHead, 1, 1), ("per_prompt_k4_m2", PerPromptHead, 4, 2),
          ("vote_k2_m2", VoteHead, 2, 2), ("avg_k4_m1", lambda: LogitFusion("avg"), 4, 1),
          ("entropy_weighted_k2_m2", lambda: LogitFusion("entropy_weighted"), 2, 2),
          ("rerank_mixture_k4_m2", RerankHead, 4, 2), ("rerank_vote_k2_m1", lambda: RerankHead("vote"), 2, 1),
          ("rerank_mixture_k1_m2", RerankHead, 1, 2),
          ("flex_shared_prefix_prob_avg_k4_m1", lambda: FlexFusion(layout="shared_prefix", backend="dense",
                                                                   fusion="prob_avg"), 4, 1)]


@pytest.mark.parametrize("name,make,k,m", CHECKS, ids=[c[0] for c in CHECKS])
def test_every_swept_run_is_what_the_head_answers(name, make, k, m, swept, direct):
    assert_run_is_the_head(swept / "runs" / name, make(), direct, k, m)


def assert_run_is_the_head(folder, head, direct, k: int, m: int) -> None:
    """The records of the swept run in ``folder`` answer as ``head.generate`` on the groups cut to ``(k, m)``."""
    lm, prompts, groups = direct
    cut = [cut_blocks(dict(g, paraphrases=g["paraphrases"][:k]), m) for g in groups]
    got = sorted((r["id"], r["paraphrase_index"] or 0, r.get("block_index", 0), r["generation"])
                 for r in load_run(folder).records)
    want = sorted((r["id"], r["paraphrase_index"] or 0, r.get("block_index", 0), r["generation"])
                  for r in head.generate(lm.decoder, prompts, cut))
    assert got == want and len(got) > 0


def test_the_swept_cascade_is_the_head_and_its_curve_ends_at_first_stage_and_ensemble(swept, direct):
    lm, prompts, groups = direct
    cut = [cut_blocks(dict(g, paraphrases=g["paraphrases"][:4]), 2) for g in groups]
    label = "cascade_rerank_mixture_first2_agreement_t0.75"
    swept_recs = sorted(load_run(swept / "runs" / f"{label}_k4_m2").records, key=lambda r: r["id"])
    head = sorted(CascadeHead(first=2, threshold=0.75).generate(lm.decoder, prompts, cut), key=lambda r: r["id"])
    assert [(r["generation"], r["path"], r["decoded_rows"]) for r in swept_recs] == \
        [(r["generation"], r["path"], r["decoded_rows"]) for r in head]
    curve = json.loads((swept / "sweep.json").read_text())["cascades"][f"{label}_k4_m2"]
    data = json.loads((swept / "sweep.json").read_text())["accuracy"]
    assert curve[0][0] == 0 and curve[0][2] == 2  # threshold 0: the two cheap members only
    assert curve[-1][0] > 1 and curve[-1][2] == 8 and curve[-1][1] == pytest.approx(data["rerank_mixture"]["k4_m2"])


def test_rerun_reuses_every_fact_and_run(swept, scored_file, tiny_model_dir, tmp_path, capsys, monkeypatch):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(swept, copy)
    capsys.readouterr()

    def no_decoding(*args, **kwargs):
        raise AssertionError("a finished fact or run was decoded again")

    monkeypatch.setattr(GreedyDecoder, "decode_n_tokens", no_decoding)
    monkeypatch.setattr(GreedyDecoder, "prefill", no_decoding)
    sweep.main(sweep_args(tiny_model_dir, copy, data=scored_file))
    out = capsys.readouterr().out
    assert "every fact reused" in out and "reused (3 records)" in out
    assert json.loads((copy / "sweep.json").read_text())["accuracy"] == \
        json.loads((swept / "sweep.json").read_text())["accuracy"]


def test_sweep_errors_name_the_flag_or_record(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"fewer than the largest of --ks \(7\)"):
        sweep.main(sweep_args(tiny_model_dir, tmp_path / "a", "--ks", "1,7"))
    two = json.dumps([{"class_path": "selfens_pl.heads.LogitFusion", "init_args": {"method": "avg"}}] * 2)
    with pytest.raises(ValueError, match="--heads: .*'avg'"):
        sweep.main(sweep_args(tiny_model_dir, tmp_path / "b", "--heads", two))
    with pytest.raises(ValueError, match="--batch_rows"):
        sweep.main(sweep_args(tiny_model_dir, tmp_path / "c", "--batch_rows", "0"))
    with pytest.raises(ValueError, match="--ms='1,x'"):
        sweep.main(sweep_args(tiny_model_dir, tmp_path / "d", "--ms", "1,x"))
    with pytest.raises(ValueError, match="--data.demo_blocks=3: the sweep sets it"):
        sweep.main(sweep_args(tiny_model_dir, tmp_path / "e", "--data.demo_blocks", "3"))


def test_int_lists():
    assert sweep.int_list("6, 1,3,3", "--ks") == [1, 3, 6] and sweep.int_list([3, 1], "--ks") == [1, 3]
    with pytest.raises(ValueError, match="--ks='0'"):
        sweep.int_list("0", "--ks")


def test_sweep_is_a_cli_verb():
    from selfens_pl.cli import TOOLS

    assert TOOLS["sweep"] == "selfens_pl.commands.sweep:main"


def test_shipped_sweep_config_instantiates(monkeypatch):
    """studies/myriadlama_sweep/sweep_myriadlama.yaml parses and builds every head (no model loaded): the 800
    shipped facts, K in {1, 3, 6}, M in {1, 3}."""
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    parser = sweep.build_parser()
    cfg = parser.parse_args(["--config", "studies/myriadlama_sweep/sweep_myriadlama.yaml"])
    init = (getattr(parser, "instantiate", None) or parser.instantiate_classes)(cfg)
    kinds = {h.label: plan_for(h).how for h in init.heads}
    assert kinds["entropy_weighted"] == "rule" and kinds["rerank_mixture"] == "derived"
    assert any(label.startswith("cascade_") for label in kinds)
    assert sweep.int_list(cfg.ks, "--ks") == [1, 3, 6] and sweep.int_list(cfg.ms, "--ms") == [1, 3]
    assert len(cfg.data.path) == 2 and cfg.data.few_shot_pool == cfg.data.path


def test_a_head_is_swept_as_its_nearest_planned_class(monkeypatch):
    """plan_for() looks the head's classes up in order: a subclass of RerankHead is derived like RerankHead, a
    VoteHead subclass registered as generic (say it decodes its own way) runs its own generate, and so does a
    cascade escalating to it; a head of a class nobody planned runs its own generate."""
    from selfens_pl.heads import FusionHead
    from selfens_pl.sweep import plan

    class MyRerank(RerankHead):
        pass

    class OwnVote(VoteHead):
        pass

    class Unplanned(FusionHead):
        pass

    monkeypatch.setitem(plan.PLANS, OwnVote, lambda head: plan.HeadPlan("generic"))
    assert plan_for(MyRerank("max")).how == "derived" and plan_for(CascadeHead(ensemble=MyRerank())).how == "derived"
    assert plan_for(OwnVote()).how == "generic" and plan_for(CascadeHead(ensemble=OwnVote())).how == "generic"
    assert plan_for(CascadeHead(ensemble=VoteHead())).how == "derived" and plan_for(Unplanned()).how == "generic"
    assert plan_for(LogitFusion("prob_avg")).how == "rule" and plan_for(LogitFusion("weighted_avg")).how == "generic"
    assert plan_for(LogitFusion("avg", calibration="subject")).how == "generic"
    assert plan_for(RerankHead(fused="avg")).how == "generic" and plan_for(FlexFusion()).how == "generic"


def test_report_on_the_runs_gives_the_gains_of_sweep_md(swept, tmp_path):
    """`report` on the sweep's runs prints every gain cell of sweep.md, interval included: the same baselines
    (origin; the mean single paraphrase at each run's K, standard block), facts and resamples."""
    from selfens_pl.commands.report import main as report

    def rows(text: str) -> list[list[str]]:  # the table rows after "## Gains"
        return [[c.strip() for c in line.strip("|").split("|")] for line in text.split("## Gains")[1].splitlines()
                if line.startswith("| ")]

    expected = {f"{c[0]}_k{c[1]}_m{c[2]}": c[4:6] for c in rows((swept / "sweep.md").read_text()) if c[1].isdigit()}
    out, _ = report([*map(str, sorted((swept / "runs").iterdir())), "--out", str(tmp_path / "r.md"),
                     "--resamples", "200"])
    printed = {c[0]: c[4:6] for c in rows(out.read_text().split("## Accuracy against coverage")[0])}
    assert len(expected) > 30 and {name: printed.get(name) for name in expected} == expected
