"""The built-in controls (:mod:`selfens_pl.heads.controls`), checked against their definitions on the tiny real
model and hand-made groups with blocks: the kNN prompt is origin asked with that block as its template; ``all`` is
origin with the extra blocks' demonstrations concatenated, least similar first; the copy is the first
demonstration's answer, the vote the majority; self-consistency at temperature 0 is the greedy prompt token for
token; batched equals alone; the strongest-control column picks the best control per run; and the sweep derives what
``generate`` answers."""

from __future__ import annotations

import json

import pytest
from test_demos import with_blocks
from test_sweep_short_groups import FIXTURES, SHOTS, SIZES, uneven_file  # noqa: F401  (fixture)

import selfens_pl.commands.sweep as sweep
from selfens_pl.commands.report import load_run
from selfens_pl.data.demos import cut_blocks

from selfens_pl.data.prompts import PromptTemplate, PromptTokenizer
from selfens_pl.engine.batches import prompt_batch, rows_batch
from selfens_pl.engine.decoding import GreedyDecoder, no_fusion
from selfens_pl.errors import UserError
from selfens_pl.heads import NearestAnswerHead, OriginHead, SelfConsistencyHead, SimilarPromptHead
from selfens_pl.heads.controls import demos_vote, is_control, knn_demos, nearest_answer
from selfens_pl.scoring.agreement import Lemmas
from selfens_pl.scoring.gains import Baselines, strongest
from selfens_pl.sweep.derive import Run
from selfens_pl.sweep.report import gains

BLOCKS = [[{"question": "capital of peru?", "answer": "Lima"}, {"question": "capital of chile?", "answer": "santiago"}],
          [{"question": "city of peru?", "answer": "lima"}, {"question": "river of peru?", "answer": "Amazon"}]]


def hand_made(groups):
    """The fixture groups with two hand-made extra blocks (block 1 most similar first, then block 2)."""
    return [dict(g, blocks=[list(b) for b in BLOCKS]) for g in groups]


def alone(decoder, ids):
    return decoder.decode_n_tokens(rows_batch(decoder, [ids]), no_fusion, no_fusion)[0]


def test_knn_prompt_is_origin_asked_with_block_1_as_its_template(tiny_lm, template, groups, one_thread):
    dec, prompts = tiny_lm.decoder, tiny_lm.prompts(template)
    data = hand_made(groups)
    records = SimilarPromptHead().generate(dec, prompts, data)
    for rec, g in zip(records, data):
        own = PromptTokenizer(tiny_lm.tokenizer, PromptTemplate(template.instruction, BLOCKS[0]))
        want = alone(dec, own.prompt_ids(g["paraphrases"][0]))
        assert (rec["generation"], rec["method"], rec["block_index"]) == (want.text, "knn_prompt", 1)


def test_knn_prompt_all_is_origin_with_every_demo_least_similar_first(tiny_lm, template, groups, one_thread):
    dec, prompts = tiny_lm.decoder, tiny_lm.prompts(template)
    data = hand_made(groups)
    order = [BLOCKS[1][1], BLOCKS[1][0], BLOCKS[0][1], BLOCKS[0][0]]
    assert knn_demos(data[0]) == order
    records = SimilarPromptHead("all").generate(dec, prompts, data)
    for rec, g in zip(records, data):
        own = PromptTokenizer(tiny_lm.tokenizer, PromptTemplate(template.instruction, order))
        assert own.template.prefix.rstrip().endswith("Q: capital of peru?\nA: Lima")  # the nearest last
        assert rec["generation"] == alone(dec, own.prompt_ids(g["paraphrases"][0])).text
        assert (rec["method"], rec["demonstrations"]) == ("knn_prompt_all", 4)


def test_copy_is_the_first_demos_answer_and_the_vote_the_majority(tiny_lm, template, groups):
    data = hand_made(groups)
    assert nearest_answer(data[0]) == "Lima"
    # Lima, lima (agree under the lemma rule), santiago, Amazon: the first of the agreeing pair wins
    assert demos_vote(data[0]) == ("Lima", 2)
    tie = dict(data[0], blocks=[[{"question": "a", "answer": "x"}, {"question": "b", "answer": "y"}],
                                [{"question": "c", "answer": "y"}, {"question": "d", "answer": "x"}]])
    assert demos_vote(tie)[0] == "x"  # 2 - 2: the more similar one
    for rule, want, agreement in (("nearest", "Lima", None), ("vote", "Lima", 0.5)):
        rec = NearestAnswerHead(rule).generate(None, None, data)[0]  # no model
        assert (rec["prediction"], rec["agreement"], rec["method"]) == (want, agreement, f"copy_{rule}")
        assert NearestAnswerHead(rule).decoded_rows(6) == 0


def test_controls_refuse_groups_without_extra_blocks_naming_the_flag(tiny_lm, template, groups):
    for head in (SimilarPromptHead(), SimilarPromptHead("all"), NearestAnswerHead(), NearestAnswerHead("vote")):
        with pytest.raises(UserError, match=r"record .*no extra few-shot block: run with --data\.demo_blocks >= 2 "
                                            r"with --data\.demo_selection similar"):
            head.generate(tiny_lm.decoder, tiny_lm.prompts(template), groups)
    for bad in (dict(samples=0), dict(temperature=-1), dict(top_p=0), dict(prompt="x")):
        with pytest.raises(UserError, match="--model.head.init_args"):
            SelfConsistencyHead(**bad)


@pytest.mark.parametrize("stop", ["\n", None], ids=["newline", "eos"])
def test_self_consistency_at_temperature_0_is_the_greedy_prompt_token_for_token(stop, tiny_lm, template, groups,
                                                                                one_thread):
    dec = GreedyDecoder(tiny_lm.lm, tiny_lm.tokenizer, max_new_tokens=6, stop=stop, compile=False)
    prompts = tiny_lm.prompts(template)
    data = [hand_made(groups)[0], *groups[1:]]  # one group with blocks (kNN prompt), the others origin's
    for prompt in ("knn", "origin"):
        head = SelfConsistencyHead(samples=2, temperature=0, prompt=prompt)
        items = [(g, g["paraphrases"][0], 1 if prompt == "knn" and g.get("blocks") else 0) for g in data]
        greedy = dec.decode_n_tokens(prompt_batch(dec, prompts, items), no_fusion, no_fusion)
        for own, want in zip(head.sampled(dec, prompts, data), greedy):
            assert [s.token_ids for s in own] == [want.token_ids] * 2
    # the records too: N = members (3 here), at temperature 0 origin's records
    sc = SelfConsistencyHead(temperature=0, prompt="origin").generate(dec, prompts, groups)
    assert [r["generation"] for r in sc] == [r["generation"] for r in OriginHead().generate(dec, prompts, groups)]


def test_self_consistency_is_seeded_and_batched_equals_alone(tiny_lm, template, groups, one_thread):
    dec, prompts = tiny_lm.decoder, tiny_lm.prompts(template)
    data = [dict(hand_made(groups)[0], paraphrases=groups[0]["paraphrases"][:2]),
            dict(groups[1], paraphrases=groups[1]["paraphrases"][:1]), groups[2]]
    head = SelfConsistencyHead(temperature=1.0)  # N = members: 6, 1 and 3 (ragged: one pass per N)
    batched = head.sampled(dec, prompts, data)
    assert [len(s) for s in batched] == [6, 1, 3]
    assert [[s.token_ids for s in own] for own in batched] == \
        [[s.token_ids for s in head.sampled(dec, prompts, [g])[0]] for g in data]
    assert len({tuple(s.token_ids) for s in batched[0]}) > 1  # it samples
    other = SelfConsistencyHead(temperature=1.0, seed=1).sampled(dec, prompts, data[:1])[0]
    assert [s.token_ids for s in other] != [s.token_ids for s in batched[0]]
    rec = head.vote(data[0], batched[0])
    answers = [s.prediction for s in batched[0]]
    support = [sum(Lemmas().agree(a, b) for b in answers) for a in answers]
    assert rec["voted_index"] == support.index(max(support))  # the most supported, the earliest of a tie
    assert rec["sample_predictions"] == answers and rec["decoded_rows"] == 6
    assert head.method == "self_consistency_knn_t1" and SelfConsistencyHead().method == "self_consistency_knn" and SelfConsistencyHead(5, 0.5, seed=2).method == \
        "self_consistency_knn_n5_t0.5_seed2"


def test_is_control():
    assert all(is_control(m) for m in ("knn_prompt", "knn_prompt_all", "copy_vote", "self_consistency_knn_n5"))
    assert not any(is_control(m) for m in ("origin", "vote", "rerank_mixture", "avg"))


def test_random_blocks_fixture_is_usable(template, groups):
    assert len(with_blocks(groups, m=3)[0]["blocks"]) == 2
    json.dumps(hand_made(groups))


# -- the sweep -----------------------------------------------------------------------------------------------------
HEADS = [{"class_path": "selfens_pl.heads.SimilarPromptHead", "init_args": {"prompt": "nearest"}},
         {"class_path": "selfens_pl.heads.SimilarPromptHead", "init_args": {"prompt": "all"}},
         {"class_path": "selfens_pl.heads.NearestAnswerHead", "init_args": {"rule": "nearest"}},
         {"class_path": "selfens_pl.heads.NearestAnswerHead", "init_args": {"rule": "vote"}},
         {"class_path": "selfens_pl.heads.SelfConsistencyHead", "init_args": {"temperature": 1.0}}]


def sweep_args(model_dir, groups_file, out, heads, selection="similar"):
    return ["--model.model", str(model_dir), "--data.path", str(groups_file), "--data.task", "webqa",
            "--data.few_shot", json.dumps(SHOTS), "--data.few_shot_pool", str(FIXTURES / "webqa_tiny.jsonl"),
            "--data.demo_selection", selection, "--heads", json.dumps(heads), "--ks", "1,2", "--ms", "1,3",
            "--short_groups", "use_all", "--resamples", "100", "--model.max_new_tokens", "4", "--model.stop", "null",
            "--batch_rows", "7", "--output_dir", str(out)]


@pytest.fixture(scope="module")
def swept_controls(tiny_model_dir, uneven_file, tmp_path_factory):  # noqa: F811
    import torch

    out, threads = tmp_path_factory.mktemp("sweep_controls") / "out", torch.get_num_threads()
    torch.set_num_threads(1)  # (the one_thread fixture's reason; it is function-scoped)
    try:
        sweep.main(sweep_args(tiny_model_dir, uneven_file, out, HEADS))
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def similar_direct(tiny_model_dir, uneven_file):  # noqa: F811
    from selfens_pl.data.datamodule import ParaphraseDataModule
    from selfens_pl.lit.module import SelfEnsembleLM

    dm = ParaphraseDataModule(path=str(uneven_file), task="webqa", few_shot=SHOTS, demo_selection="similar",
                              few_shot_pool=str(FIXTURES / "webqa_tiny.jsonl"), demo_blocks=3)
    dm.setup()
    lm = SelfEnsembleLM(model=str(tiny_model_dir), max_new_tokens=4, stop=None)
    lm.configure_model()
    return lm, lm.prompts(dm.template), dm.groups


RUNS = [("knn_prompt_k1_m3", SimilarPromptHead, 1, 3), ("knn_prompt_all_k1_m3", lambda: SimilarPromptHead("all"), 1, 3),
        ("copy_nearest_k1_m3", NearestAnswerHead, 1, 3), ("copy_vote_k1_m3", lambda: NearestAnswerHead("vote"), 1, 3),
        ("self_consistency_knn_t1_k2_m3", lambda: SelfConsistencyHead(temperature=1.0), 2, 3),
        ("self_consistency_knn_t1_k2_m1", lambda: SelfConsistencyHead(temperature=1.0), 2, 1)]


@pytest.mark.parametrize("name,make,k,m", RUNS, ids=[r[0] for r in RUNS])
def test_every_control_run_of_the_sweep_is_what_the_head_answers(name, make, k, m, swept_controls, similar_direct,
                                                                 one_thread):
    lm, prompts, groups = similar_direct
    cut = [cut_blocks(dict(g, paraphrases=g["paraphrases"][:k]), m) for g in groups]
    got = sorted((r["id"], r["generation"]) for r in load_run(swept_controls / "runs" / name).records)
    want = sorted((r["id"], r["generation"]) for r in make().generate(lm.decoder, prompts, cut))
    assert got == want
    summary = json.loads((swept_controls / "runs" / name / "summary.json").read_text())
    rows = 1 if name.startswith("knn") else 0 if name.startswith("copy") else sum(min(k, s) * m for s in SIZES) / 5
    assert summary["cost"]["decoded_rows"] == pytest.approx(rows)
    if name.startswith("copy"):
        assert summary["cost"]["prompt_tokens"] == 0


def test_the_sweep_reports_the_gain_over_the_strongest_control(swept_controls):
    runs = {p.name for p in (swept_controls / "runs").iterdir()}
    # K-independent controls once per M >= 2; none at M = 1; self-consistency at every (K, M)
    assert {"knn_prompt_k1_m3", "copy_vote_k1_m3"} <= runs and not runs & {"knn_prompt_k2_m3", "knn_prompt_k1_m1"}
    assert {f"self_consistency_knn_t1_k{k}_m{m}" for k in (1, 2) for m in (1, 3)} <= runs
    data = json.loads((swept_controls / "sweep.json").read_text())
    by_name = {(r["method"], r["k"], r["m"]): r for r in data["gains"]}
    accuracy = {name: json.loads((swept_controls / "runs" / name / "summary.json").read_text())["accuracy"]
                for name in runs}
    for (method, k, m), row in by_name.items():
        present = [n for n in runs if n.endswith(f"_m{m}") and (n.startswith(("knn_prompt", "copy_"))
                                                                 or n.startswith("self_consistency") and f"_k{k}_" in n)]
        assert accuracy[row["control"]] == max(accuracy[n] for n in present)
        assert (row["vs_control"] is None) == (row["control"] == f"{method}_k{k}_m{m}")
    assert "vs strongest control" in (swept_controls / "sweep.md").read_text()


def test_controls_need_similar_blocks_in_a_sweep(tiny_model_dir, uneven_file, tmp_path):  # noqa: F811
    with pytest.raises(UserError, match="knn_prompt is a control for similar demonstrations.*--data.demo_selection "
                                        "similar"):
        sweep.main(sweep_args(tiny_model_dir, uneven_file, tmp_path / "a", HEADS[:1], "random"))


def hand_run(method, k, m, correct, rows=1.0, control=False, ignores_k=False):
    records = [{"id": f"f{i}", "correct": c, "prediction": "x", "answers": ["x"]} for i, c in enumerate(correct)]
    return Run(method, k, m, records, rows=rows, prompt_tokens=10.0,
               extra={"control": True, "ignores_k": ignores_k} if control else {})


def test_the_strongest_control_column_picks_the_best_control_of_each_run():
    """Hand-made runs on 8 facts: at M = 3 the copy (ignores K: counts at K = 2 too) is beaten by self-consistency
    at K = 2 only; at M = 1 there is no control."""
    origin = hand_run("origin", 1, 1, [1, 0, 0, 0, 0, 0, 0, 0])
    per_prompt = [dict(r, paraphrase_index=0, block_index=0) for r in origin.records]
    runs = [hand_run("per_prompt", 2, 3, [1] * 8), origin,
            hand_run("vote", 2, 1, [1, 1, 0, 0, 0, 0, 0, 0], rows=2),
            hand_run("copy_nearest", 1, 3, [1, 1, 1, 0, 0, 0, 0, 0], rows=0, control=True, ignores_k=True),
            hand_run("knn_prompt", 1, 3, [1, 1, 1, 0, 0, 0, 0, 0], control=True, ignores_k=True),  # tie: cheaper wins
            hand_run("self_consistency_knn", 1, 3, [1, 0, 0, 0, 0, 0, 0, 0], rows=3, control=True),
            hand_run("self_consistency_knn", 2, 3, [1, 1, 1, 1, 1, 0, 0, 0], rows=6, control=True),
            hand_run("rerank_mixture", 1, 3, [1, 1, 1, 1, 0, 0, 0, 0], rows=3),
            hand_run("rerank_mixture", 2, 3, [1, 1, 1, 1, 1, 1, 0, 0], rows=6)]
    rows = {(r["method"], r["k"], r["m"]): r for r in gains(runs, Baselines(None, per_prompt), 200, 0)}
    assert "control" not in rows[("vote", 2, 1)]
    assert rows[("rerank_mixture", 1, 3)]["control"] == "copy_nearest_k1_m3"
    assert rows[("rerank_mixture", 1, 3)]["vs_control"].diff == pytest.approx(0.125)
    assert rows[("rerank_mixture", 2, 3)]["control"] == "self_consistency_knn_k2_m3"
    assert rows[("rerank_mixture", 2, 3)]["vs_control"].diff == pytest.approx(0.125)
    assert rows[("copy_nearest", 1, 3)]["vs_control"] is None  # the strongest itself
    assert rows[("knn_prompt", 1, 3)]["vs_control"].diff == 0.0
    assert rows[("self_consistency_knn", 1, 3)]["rows"] == 3  # a control is listed whatever its K x M
    assert strongest([]) is None and strongest([("a", {"f": 0.0}), ("b", {"f": 0.0})])[0] == "a"


def test_report_adds_the_gain_over_the_strongest_control_run_given(tmp_path):
    """report on hand-made runs (4 facts): the copy (1/4, 0 rows) and the kNN prompt (3/4, 1 row) are controls; the
    kNN prompt is the strongest; avg (4/4) gains +25 over it; without a control run given there is no column."""
    from test_report import rec, table_rows, write_run

    from selfens_pl.commands.report import gains_table

    hits = {"origin": [1, 0, 0, 0], "copy_nearest": [1, 0, 0, 0], "knn_prompt": [1, 1, 1, 0], "avg": [1, 1, 1, 1]}
    cost = {"copy_nearest": 0, "knn_prompt": 1}
    runs = [load_run(write_run(tmp_path / m, {"method": m, "n": 4, "records": 4, "cost": {"decoded_rows": cost.get(m)}},
                               [rec(f"q{i}", m, 0, bool(c)) for i, c in enumerate(h)])) for m, h in hits.items()]
    table, note = gains_table(runs, 200, 0)
    rows = {r[0]: r for r in table_rows(table)}
    assert rows["run"][-1] == "vs strongest control"
    assert rows["knn_prompt"][-1] == "strongest" and rows["avg"][-1].startswith("+25.0 [")
    assert rows["copy_nearest"][-1].startswith("-50.0 [")
    assert "Strongest control: `knn_prompt`" in note
    table, _ = gains_table([r for r in runs if r.method in ("origin", "avg")], 200, 0)
    assert "vs strongest control" not in table


def test_predict_refuses_a_control_on_random_blocks_or_none_naming_the_flag():
    from types import SimpleNamespace

    from selfens_pl.lit.preflight import check_head_data

    def data(blocks, selection):
        return SimpleNamespace(hparams=SimpleNamespace(demo_blocks=blocks, demo_selection=selection))

    for head in (SimilarPromptHead(), NearestAnswerHead("vote"), SelfConsistencyHead()):
        with pytest.raises(UserError, match="is a control for similar demonstrations.*--data.demo_selection similar"):
            check_head_data(head, data(3, "random"))
        check_head_data(head, data(3, "similar"))
    with pytest.raises(UserError, match=r"knn_prompt_all needs extra few-shot blocks: give --data.demo_blocks 2 or more"):
        check_head_data(SimilarPromptHead("all"), data(1, "similar"))
    check_head_data(SelfConsistencyHead(prompt="origin"), data(1, "random"))  # origin's prompt: any data
