"""The sweep with wider candidates (``RerankHead(first_tokens=k)``): the engine decodes every member's alternatives
once, for the largest ``k`` of its heads, and every widened run (a smaller ``k`` too, a cascade escalating to one, the
cross-validated chooser) is what the head answers on the groups itself, with the candidate oracle in the report."""

from __future__ import annotations

import json

import pytest
from test_sweep_short_groups import FIXTURES, SHOTS, direct, uneven_file  # noqa: F401  (fixtures)

from selfens_pl.commands import sweep
from selfens_pl.commands.report import load_run
from selfens_pl.data.demos import cut_blocks
from selfens_pl.heads import CascadeHead, RerankHead
from selfens_pl.jsonl import read_jsonl

HEADS = [{"class_path": "selfens_pl.heads.RerankHead", "init_args": {"rule": "mixture", "first_tokens": 3}},
         {"class_path": "selfens_pl.heads.RerankHead", "init_args": {"rule": "max", "first_tokens": 2}},
         {"class_path": "selfens_pl.heads.RerankHead", "init_args": {"rule": "mixture"}},
         {"class_path": "selfens_pl.heads.CascadeHead",
          "init_args": {"first": 2, "threshold": 0.75,
                        "ensemble": {"class_path": "selfens_pl.heads.RerankHead", "init_args": {"first_tokens": 3}}}}]
SIZES = [1, 3, 2, 3, 1]  # the groups of test_sweep_short_groups.uneven_file


def sweep_uneven(model_dir, groups_file, out, heads: list[dict], ks: str):
    """The sweep over the uneven groups with random blocks (M in 1, 2), ``heads`` and ``ks``; returns ``out``."""
    sweep.main(["--model.model", str(model_dir), "--data.path", str(groups_file), "--data.task", "webqa",
                "--data.few_shot", json.dumps(SHOTS), "--data.few_shot_pool", str(FIXTURES / "webqa_tiny.jsonl"),
                "--heads", json.dumps(heads), "--ks", ks, "--ms", "1,2", "--short_groups", "use_all",
                "--resamples", "100", "--model.max_new_tokens", "4", "--model.stop", "null", "--batch_rows", "7",
                "--output_dir", str(out)])
    return out


@pytest.fixture(scope="module")
def widened(tiny_model_dir, uneven_file, tmp_path_factory):  # noqa: F811
    return sweep_uneven(tiny_model_dir, uneven_file, tmp_path_factory.mktemp("sweep_wider") / "out", HEADS, "1,2,3")


def candidates_of(records: list[dict]) -> list[tuple]:
    """Per record (by id): its answer and its candidates (prediction, member, rank, support, score to 3 places)."""
    return sorted((r["id"], r["generation"], tuple((c["prediction"], c["member"], c.get("rank", 0), c["support"],
                                                    round(c["score"], 2)) for c in r["candidates"]))
                  for r in records)


CHECKS = [("rerank_mixture_top3", lambda: RerankHead(first_tokens=3)),
          ("rerank_max_top2", lambda: RerankHead("max", first_tokens=2)),  # the first of the engine's alternatives
          ("rerank_mixture", RerankHead)]


@pytest.mark.parametrize("k,m", [(3, 2), (2, 1), (1, 2)])
@pytest.mark.parametrize("label,make", CHECKS, ids=[c[0] for c in CHECKS])
def test_every_widened_run_is_what_the_head_answers(label, make, k, m, widened, direct):  # noqa: F811
    lm, prompts, groups = direct
    cut = [cut_blocks(dict(g, paraphrases=g["paraphrases"][:k]), m) for g in groups]
    got = load_run(widened / "runs" / f"{label}_k{k}_m{m}").records
    assert candidates_of(got) == candidates_of(make().generate(lm.decoder, prompts, cut))
    head = make()
    ranks = {c.get("rank", 0) for r in got for c in r["candidates"]}
    assert ranks <= set(range(head.first_tokens)) and (head.first_tokens == 1 or max(ranks) > 0)
    summary = json.loads((widened / "runs" / f"{label}_k{k}_m{m}" / "summary.json").read_text())
    assert summary["cost"]["decoded_rows"] == pytest.approx(
        sum(min(k, s) * m * head.first_tokens for s in SIZES) / len(SIZES))
    assert summary["member_oracle"] <= summary["candidate_oracle"]


def test_the_cascade_escalating_to_wider_candidates_is_the_head(widened, direct):  # noqa: F811
    lm, prompts, groups = direct
    cut = [cut_blocks(dict(g, paraphrases=g["paraphrases"][:3]), 2) for g in groups]
    got = load_run(widened / "runs" / "cascade_rerank_mixture_top3_first2_agreement_t0.75_k3_m2").records
    want = CascadeHead(ensemble=RerankHead(first_tokens=3), first=2, threshold=0.75).generate(lm.decoder, prompts,
                                                                                               cut)
    assert sorted((r["id"], r["generation"], r["decoded_rows"]) for r in got) == \
        sorted((r["id"], r["generation"], r["decoded_rows"]) for r in want)


def test_the_engine_decodes_the_largest_k_once_and_the_report_has_the_candidate_oracle(widened):
    rows = read_jsonl(widened / "facts.jsonl")
    settings = json.loads((widened / "facts.settings.json").read_text())
    assert settings["first_tokens"] == 3
    for row in rows:
        assert [len(own) for own in row["alternatives"]] == [2] * len(row["members"])
        columns = {tuple(c["tokens"]) for c in row["candidates"]}
        assert all(tuple(x["tokens"]) in columns for own in row["alternatives"] for x in own if x["prediction"])
    report = (widened / "sweep.md").read_text()
    grid = json.loads((widened / "sweep.json").read_text())["accuracy"]
    wide, members = grid["oracle (any candidate, top3)"], grid["oracle (any member)"]
    assert set(wide) == {f"k{k}_m{m}" for k in (1, 2, 3) for m in (1, 2)}
    assert all(wide[c] >= members[c] for c in wide)
    assert "| oracle (any candidate, top3) |" in report and "oracle (any candidate, top2)" in grid
    # one member with wider candidates is not origin: its gain is reported; one member without them is origin
    gains = {(g["method"], g["k"], g["m"]) for g in json.loads((widened / "sweep.json").read_text())["gains"]}
    assert ("rerank_mixture_top3", 1, 1) in gains and ("rerank_max_top2", 1, 1) in gains
    assert ("rerank_mixture", 1, 1) not in gains and ("vote", 1, 1) not in gains


def test_the_cross_validated_chooser_over_wider_candidates_is_the_head_with_its_folds_file(
        widened, direct, tmp_path):  # noqa: F811
    """``rerank_learned_top3_cv``: each fact's record is what ``RerankHead("learned", chooser=<the file of the
    chooser fit on the other folds>, first_tokens=3)`` answers on it by itself. (The tiny model is never right, so
    "right" is a rule of the answer's length here: the chooser has both kinds to learn from.)"""
    from selfens_pl.scoring.chooser import fold_choosers, fold_of
    from selfens_pl.sweep.derive import Deriver
    from selfens_pl.sweep.engine import Grid

    lm, prompts, groups = direct
    facts = {row["id"]: row for row in read_jsonl(widened / "facts.jsonl")}
    derive = Deriver(facts, groups, Grid((1, 2, 3), (1, 2)), lambda p, answers: len(p) % 2 == 0)
    head = RerankHead("learned", first_tokens=3)
    data = derive.chooser_data(head, 3, 2)
    run = derive.cross_validated("rerank_learned_top3_cv", head, 3, 2, folds=2, data=data)
    ids, _, feats, labels, _ = data
    files = {f: model.save(tmp_path / f"fold{f}.json") for f, model in fold_choosers(ids, feats, labels, 2).items()}
    cut = {g["id"]: cut_blocks(dict(g, paraphrases=g["paraphrases"][:3]), 2) for g in groups}
    want = [RerankHead("learned", chooser=str(files[fold_of(r["id"], 2)]), first_tokens=3).generate(
        lm.decoder, prompts, [cut[r["id"]]])[0] for r in run.records]
    assert candidates_of(run.records) == candidates_of(want)
    assert any(c["rank"] > 0 for r in run.records for c in r["candidates"])
    assert run.extra["first_tokens"] == 3 and all("candidate_correct" in r for r in run.records)
