"""`sweep --short_groups use_all`: groups of unequal size (a `paraphrase` file: the original question and the
paraphrases that passed the checks) are swept with all they have at a larger K, and every run equals the head run
directly on the groups cut to K (a short group cut to K is the whole group), token for token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_sweep import assert_run_is_the_head

from selfens_pl.commands import sweep
from selfens_pl.commands.report import load_run
from selfens_pl.data.demos import cut_blocks
from selfens_pl.heads import CascadeHead, LogitFusion, OriginHead, PerPromptHead, RerankHead, VoteHead

FIXTURES = Path(__file__).parent / "fixtures"
SHOTS = [{"question": "what is the capital city of west germany?", "answer": "Bonn"},
         {"question": "what currency do they use in qatar?", "answer": "Qatari riyal"}]
HEADS = [{"class_path": "selfens_pl.heads.LogitFusion", "init_args": {"method": "avg"}},
         {"class_path": "selfens_pl.heads.RerankHead", "init_args": {"rule": "mixture"}},
         {"class_path": "selfens_pl.heads.CascadeHead", "init_args": {"first": 2, "threshold": 0.75}}]
SIZES = [1, 3, 2, 3, 1]  # paraphrases per group, the original included


@pytest.fixture(scope="module")
def uneven_file(tmp_path_factory) -> Path:
    """Five WebQuestions groups of 1 to 3 paraphrases (word-order variants of the fixture questions)."""
    rows = [json.loads(line) for line in (FIXTURES / "webqa_tiny.jsonl").read_text().splitlines()][:len(SIZES)]
    groups = []
    for i, (row, size) in enumerate(zip(rows, SIZES)):
        q = row["question"]
        variants = [q, "tell me " + q, q.rstrip("?") + ", please?"]
        groups.append({"id": f"q{i}", "question": q, "answers": row["answers"], "paraphrases": variants[:size]})
    path = tmp_path_factory.mktemp("uneven") / "groups.jsonl"
    path.write_text("".join(json.dumps(g) + "\n" for g in groups))
    return path


def args(model_dir, data: Path, out: Path, *extra) -> list[str]:
    return ["--model.model", str(model_dir), "--data.path", str(data), "--data.task", "webqa",
            "--data.few_shot", json.dumps(SHOTS), "--data.few_shot_pool", str(FIXTURES / "webqa_tiny.jsonl"),
            "--heads", json.dumps(HEADS), "--ms", "1,2", "--resamples", "100", "--model.max_new_tokens", "4",
            "--model.stop", "null", "--batch_rows", "7", "--output_dir", str(out), *extra]


@pytest.fixture(scope="module")
def swept(tiny_model_dir, uneven_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep_uneven") / "out"
    sweep.main(args(tiny_model_dir, uneven_file, out, "--short_groups", "use_all", "--ks", "1,2,3"))
    return out


@pytest.fixture(scope="module")
def direct(tiny_model_dir, uneven_file):
    from selfens_pl.data.datamodule import ParaphraseDataModule
    from selfens_pl.lit.module import SelfEnsembleLM

    dm = ParaphraseDataModule(path=str(uneven_file), task="webqa", few_shot=SHOTS,
                              few_shot_pool=str(FIXTURES / "webqa_tiny.jsonl"), demo_blocks=2)
    dm.setup()
    lm = SelfEnsembleLM(model=str(tiny_model_dir), max_new_tokens=4, stop=None)
    lm.configure_model()
    return lm, lm.prompts(dm.template), dm.groups


def test_short_groups_are_refused_by_default_naming_the_flag(tiny_model_dir, uneven_file, tmp_path):
    with pytest.raises(ValueError, match=r"record 'q0' has 1 paraphrases, fewer than the largest of --ks \(3\); "
                                         r"--short_groups use_all"):
        sweep.main(args(tiny_model_dir, uneven_file, tmp_path / "a", "--ks", "1,3"))


CHECKS = [("origin_k1_m1", OriginHead, 1, 1), ("per_prompt_k3_m2", PerPromptHead, 3, 2),
          ("vote_k3_m2", VoteHead, 3, 2), ("vote_k2_m1", VoteHead, 2, 1),
          ("avg_k3_m1", lambda: LogitFusion("avg"), 3, 1), ("avg_k2_m2", lambda: LogitFusion("avg"), 2, 2),
          ("rerank_mixture_k3_m2", RerankHead, 3, 2), ("rerank_mixture_k2_m1", RerankHead, 2, 1)]


@pytest.mark.parametrize("name,make,k,m", CHECKS, ids=[c[0] for c in CHECKS])
def test_every_run_on_short_groups_is_what_the_head_answers(name, make, k, m, swept, direct):
    assert_run_is_the_head(swept / "runs" / name, make(), direct, k, m)


def test_the_cascade_on_short_groups_is_the_head(swept, direct):
    lm, prompts, groups = direct
    cut = [cut_blocks(dict(g, paraphrases=g["paraphrases"][:3]), 2) for g in groups]
    label = "cascade_rerank_mixture_first2_agreement_t0.75_k3_m2"
    got = sorted((r["id"], r["generation"], r["decoded_rows"]) for r in load_run(swept / "runs" / label).records)
    want = sorted((r["id"], r["generation"], r["decoded_rows"])
                  for r in CascadeHead(first=2, threshold=0.75).generate(lm.decoder, prompts, cut))
    assert got == want


def test_cost_counts_each_groups_own_members_and_the_report_says_so(swept):
    for k, m in ((3, 2), (2, 1), (3, 1)):
        summary = json.loads((swept / "runs" / f"rerank_mixture_k{k}_m{m}" / "summary.json").read_text())
        assert summary["cost"]["decoded_rows"] == pytest.approx(sum(min(k, s) * m for s in SIZES) / len(SIZES))
    assert "3 of 5 have fewer than K = 3 paraphrases (mean 2.00" in (swept / "sweep.md").read_text()
