"""`python -m selfens_pl report`: table values, oracle on hand-made predictions, the PNG, missing-file errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfens_pl.cli import main as cli_main
from selfens_pl.commands.report import ORACLE_LABEL, accuracy_by_paraphrase, load_run, main, oracle_accuracy

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def rec(id_, method, index, correct, prediction="x"):
    return {"id": id_, "method": method, "paraphrase_index": index, "paraphrases": ["q"], "generation": f" {prediction}\n",
            "prediction": prediction, "answers": ["a"], "correct": correct}


def write_run(directory: Path, summary: dict, records: list[dict]) -> Path:
    directory.mkdir(parents=True)
    (directory / "summary.json").write_text(json.dumps(summary))
    (directory / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return directory


# per_prompt, 4 questions x 3 paraphrases:
#   q1: [T, F, F]  q2: [F, F, T]  q3: [F, F, F]  q4: [T, T, F]
# paraphrase accuracy: #0 2/4, #1 1/4, #2 1/4; oracle: q1, q2, q4 -> 3/4
PER_PROMPT = {"q1": [True, False, False], "q2": [False, False, True], "q3": [False, False, False],
              "q4": [True, True, False]}


def per_prompt_records():
    return [rec(q, "per_prompt", i, c) for q, hits in PER_PROMPT.items() for i, c in enumerate(hits)]


@pytest.fixture
def runs(tmp_path):
    out = tmp_path / "outputs"
    origin = write_run(out / "origin_x", {
        "method": "origin", "model": "tiny", "n": 4, "records": 4, "accuracy": 0.5, "exact_match": 0.25,
        "f1": 0.375, "seconds": 2.0, "questions_per_s": 2.0},
        [rec(q, "origin", 0, hits[0]) for q, hits in PER_PROMPT.items()])
    per_prompt = write_run(out / "per_prompt_x", {
        "method": "per_prompt", "model": "tiny", "n": 4, "records": 12, "accuracy": 4 / 12, "exact_match": 0.1,
        "f1": 0.204, "seconds": 8.0, "questions_per_s": 0.5}, per_prompt_records())
    avg = write_run(out / "avg_x", {
        "method": "avg", "model": "tiny", "n": 4, "records": 4, "accuracy": 0.75, "exact_match": 0.5,
        "f1": 0.625, "seconds": 4.0, "questions_per_s": 1.0},
        [rec(q, "avg", None, c) for q, c in zip(PER_PROMPT, [True, True, False, True])])
    return origin, per_prompt, avg


def table_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]


def test_oracle_and_paraphrase_accuracy_by_hand():
    records = per_prompt_records()
    acc, n = accuracy_by_paraphrase(records)
    assert acc == {0: 0.5, 1: 0.25, 2: 0.25}
    assert n == {0: 4, 1: 4, 2: 4}
    assert oracle_accuracy(records) == (0.75, 4)
    # order of records and string/int ids do not matter; unscored records are skipped
    shuffled = list(reversed(records)) + [{**rec("q5", "per_prompt", 0, None)}]
    assert oracle_accuracy(shuffled) == (0.75, 4)
    assert oracle_accuracy([rec(1, "per_prompt", 0, False), rec("1", "per_prompt", 1, True)]) == (1.0, 1)


def test_report_table_values(runs, tmp_path, capsys, monkeypatch):
    origin, per_prompt, avg = runs
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    out, png = main([str(origin), str(per_prompt), str(avg)])
    assert out.resolve() == here / "report.md"  # default: the current directory, not the runs' parent
    assert out.is_file() and png.resolve() == here / "report.png" and png.is_file()
    assert not (tmp_path / "outputs" / "report.md").exists()
    text = out.read_text().split("## Gains")[0]  # the first table (gains and coverage: their own tests)
    printed = capsys.readouterr().out.split("\n\n")[0]
    rows = table_rows(text)
    assert rows[0] == ["run", "method", "model", "n", "accuracy", "EM", "F1", "questions/s"]
    body = rows[2:]
    assert body[0] == ["origin_x", "origin", "tiny", "4", "50.0%", "25.0", "37.5", "2.00"]
    assert body[1] == ["per_prompt_x", "per_prompt", "tiny", "4", "33.3%", "10.0", "20.4", "0.50"]
    assert body[2][1:5] == ["per_prompt, paraphrase 0", "", "4", "50.0%"]
    assert body[3][1:5] == ["per_prompt, paraphrase 1", "", "4", "25.0%"]
    assert body[4][1:5] == ["per_prompt, paraphrase 2", "", "4", "25.0%"]
    assert body[5][1:5] == [ORACLE_LABEL, "", "4", "75.0%"]
    assert body[6] == ["avg_x", "avg", "tiny", "4", "75.0%", "50.0", "62.5", "1.00"]
    assert len(body) == 7
    assert table_rows(printed) == rows  # the printed table is the file's table


def test_report_gains_with_paired_intervals(runs, tmp_path, capsys, monkeypatch):
    """avg vs origin: per fact [1, 1, 0, 1] - [1, 0, 0, 1], +25.0; vs the mean single paraphrase (per fact the
    mean of per_prompt's three answers: 1/3, 1/3, 0, 2/3): 75.0 - 33.3 = +41.7; origin vs itself: exactly 0."""
    from selfens_pl.scoring.stats import paired_bootstrap

    origin, per_prompt, avg = runs
    monkeypatch.chdir(tmp_path)  # the report goes to ./report.md
    out, _ = main([str(origin), str(per_prompt), str(avg), "--resamples", "1000", "--seed", "3"])
    section = out.read_text().split("## Gains")[1].split("## Accuracy against coverage")[0]
    rows = table_rows(section)
    assert rows[0] == ["run", "method", "n", "accuracy", "vs origin", "vs mean single paraphrase"]
    body = {r[0]: r for r in rows[2:]}
    assert set(body) == {"origin_x", "avg_x"}  # a per_prompt run is the baseline, not a row
    assert body["origin_x"][4] == "+0.0 [+0.0, +0.0]"
    want = paired_bootstrap([1, 1, 0, 1], [1, 0, 0, 1], 1000, 3).format()
    assert body["avg_x"][4] == want and want.startswith("+25.0 [")
    single = paired_bootstrap([1, 1, 0, 1], [1 / 3, 1 / 3, 0, 2 / 3], 1000, 3).format()
    assert body["avg_x"][5] == single and single.startswith("+41.7 [")
    assert "1,000 resamples" in section and "paraphrase 0" not in section.split("Origin:")[1].split(";")[0]
    assert want in capsys.readouterr().out


def test_report_gains_without_baselines_say_so(runs, tmp_path):
    _, _, avg = runs
    out, _ = main([str(avg), "--out", str(tmp_path / "r.md")])
    section = out.read_text().split("## Gains")[1].split("## Accuracy against coverage")[0]
    assert table_rows(section)[2][4:] == ["–", "–"]
    assert "no origin or per_prompt run given" in section and "no per_prompt run given" in section


# a sweep's runs (summary "k"): per_prompt K = 4 x M = 2 blocks; block 1 right everywhere, so counting it shows
#   block 0: q1 [T, F, F, T]  q2 [F, T, T, F]  q3 [F, F, F, F]  q4 [T, T, F, F]
#   origin (paraphrase 0): 1, 0, 0, 1 -> 50%; mean single at K = 2: .5, .5, 0, 1 -> 50%; at K = 4: .5, .5, 0, .5
SWEPT = {"q1": [True, False, False, True], "q2": [False, True, True, False], "q3": [False] * 4,
         "q4": [True, True, False, False]}


def swept_runs(out: Path) -> dict[str, Path]:
    def run(name, method, k, records):
        return write_run(out / name, {"method": method, "model": "tiny", "n": len({r["id"] for r in records}),
                                      "records": len(records), "k": k, "m": 1}, records)

    per_prompt = [dict(rec(q, "per_prompt", i, c), block_index=0) for q, hits in SWEPT.items()
                  for i, c in enumerate(hits)]
    per_prompt += [dict(rec(q, "per_prompt", i, True), block_index=1) for q in SWEPT for i in range(4)]
    fused = {"avg_k2": [True, True, False, True], "avg_k4": [True, True, True, False]}
    return {"origin_k1": run("origin_k1", "origin", 1, [rec(q, "origin", 0, h[0]) for q, h in SWEPT.items()]),
            "per_prompt_k4": run("per_prompt_k4", "per_prompt", 4, per_prompt),
            **{name: run(name, "avg", int(name[-1]), [rec(q, "avg", None, c) for q, c in zip(SWEPT, hits)])
               for name, hits in fused.items()},
            "avg_k6": run("avg_k6", "avg", 6, [rec(q, "avg", None, True) for q in SWEPT])}


def gains_rows(out: Path) -> dict[str, list[str]]:
    section = out.read_text().split("## Gains")[1].split("## Accuracy against coverage")[0]
    return {r[0]: r for r in table_rows(section)[2:]}


def test_report_gains_of_sweep_runs_use_the_mean_single_at_their_k(tmp_path):
    """avg_k2 against the mean single paraphrase at K = 2 (50%): +25.0, not +37.5 (the mean over all 4 paraphrases,
    37.5%); avg_k4 against K = 4: 75 - 37.5 = +37.5; the standard block only. K = 6 > the 4 paraphrases answered:
    "–" and said; origin at K = 1 against paraphrase 0, i.e. itself: exactly 0."""
    from selfens_pl.scoring.stats import paired_bootstrap

    dirs = swept_runs(tmp_path / "runs")
    out, _ = main([*map(str, dirs.values()), "--out", str(tmp_path / "r.md"), "--resamples", "1000"])
    rows = gains_rows(out)
    origin = [1, 0, 0, 1]
    k2, k4 = [1, 1, 0, 1], [1, 1, 1, 0]
    assert rows["avg_k2"][2:] == ["4", "75.0%", paired_bootstrap(k2, origin, 1000).format(),
                                  paired_bootstrap(k2, [.5, .5, 0, 1], 1000).format()]
    assert rows["avg_k2"][5].startswith("+25.0 [") and rows["avg_k4"][5].startswith("+37.5 [")
    assert rows["avg_k4"][5] == paired_bootstrap(k4, [.5, .5, 0, .5], 1000).format()
    assert rows["origin_k1"][4:] == ["+0.0 [+0.0, +0.0]"] * 2
    assert rows["avg_k6"][5] == "–" and rows["avg_k6"][4].startswith("+50.0 [")
    text = out.read_text()
    assert "over paraphrases < K for a run that gives its K" in text
    assert "`avg_k6` fused K=6 paraphrases, `per_prompt_k4` answered 4: no mean single paraphrase at its K" in text


def test_report_gains_over_the_facts_in_common_and_runs_on_other_data(runs, tmp_path):
    """A run that also answered q5 (no baseline has it) is compared on the 4 common facts, said by (n=4); a run on
    other data (no fact in common) gets "–" and a note naming it and the baseline: the report is still written."""
    from selfens_pl.scoring.stats import paired_bootstrap

    origin, per_prompt, _ = runs
    wider = write_run(tmp_path / "wider", {"method": "max", "model": "tiny", "n": 5, "records": 5},
                      [rec(q, "max", None, c) for q, c in zip([*PER_PROMPT, "q5"], [True, False, True, True, True])])
    other = write_run(tmp_path / "other_data", {"method": "avg", "model": "tiny", "n": 2, "records": 2},
                      [rec(q, "avg", None, True) for q in ("w1", "w2")])
    out, _ = main([str(origin), str(per_prompt), str(wider), str(other), "--out", str(tmp_path / "r.md")])
    rows = gains_rows(out)
    assert rows["wider"][2:4] == ["5", "80.0%"]
    assert rows["wider"][4] == paired_bootstrap([1, 0, 1, 1], [1, 0, 0, 1]).format() + " (n=4)"
    assert rows["wider"][5] == paired_bootstrap([1, 0, 1, 1], [1 / 3, 1 / 3, 0, 2 / 3]).format() + " (n=4)"
    assert rows["other_data"][4:] == ["–", "–"]
    text = out.read_text()
    assert "'–': `other_data` and origin (`origin_x`) answered no fact in common." in text
    assert "'–': `other_data` and the mean single paraphrase answered no fact in common." in text


def test_report_seed_must_not_be_negative(runs, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["report", str(runs[0]), "--seed", "-1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "selfens_pl: error: --seed must be >= 0, got -1"


def test_report_png_is_valid(runs, tmp_path):
    import matplotlib.image

    out, png = main([*map(str, runs), "--out", str(tmp_path / "r" / "rep.md"), "--png", str(tmp_path / "c.png")])
    assert out == tmp_path / "r" / "rep.md" and out.is_file()
    assert png.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_report_through_cli_dispatch(runs, tmp_path):
    cli_main(["report", str(runs[0]), "--out", str(tmp_path / "one.md")])
    assert (tmp_path / "one.md").is_file() and (tmp_path / "one.png").is_file()


def test_missing_summary_names_the_dir(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    broken = tmp_path / "outputs" / "half_done"
    broken.mkdir()
    (broken / "predictions.jsonl").write_text(json.dumps(rec("q1", "avg", None, True)) + "\n")
    with pytest.raises(FileNotFoundError, match=r"half_done: no summary\.json") as e:
        main([str(runs[0]), str(broken)])
    assert "\n" not in str(e.value)
    assert not (tmp_path / "report.md").exists()  # nothing written before every run is read


def test_missing_predictions_and_dir(runs, tmp_path):
    (runs[2] / "predictions.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"avg_x: no predictions\.jsonl"):
        load_run(runs[2])
    with pytest.raises(FileNotFoundError, match=r"nowhere: no such output directory"):
        load_run(tmp_path / "nowhere")


def test_records_count_mismatch(runs):
    path = runs[0] / "predictions.jsonl"
    path.write_text(path.read_text().splitlines(keepends=True)[0])
    with pytest.raises(ValueError, match=r"origin_x: summary\.json counts 4 records but predictions\.jsonl holds 1"):
        load_run(runs[0])


# -- accuracy against coverage ----------------------------------------------------------------------------------
from selfens_pl.commands.report import accuracy_at, coverage_area, coverage_curve  # noqa: E402


def conf(correct: bool, mean_prob, agreement=None) -> dict:
    return {"correct": correct, "mean_prob": mean_prob, "agreement": agreement}


def test_coverage_curve_by_hand():
    """Ranked by mean_prob: 0.9 right, 0.8 wrong, 0.5 right, None (empty answer) wrong, ranked last."""
    records = [conf(True, 0.5), conf(False, None), conf(True, 0.9), conf(False, 0.8)]
    curve = coverage_curve(records)
    assert curve == pytest.approx([1.0, 0.5, 2 / 3, 0.5])
    assert coverage_area(curve) == pytest.approx((1 + 0.5 + 2 / 3 + 0.5) / 4)
    assert accuracy_at(curve, 0.5) == pytest.approx(0.5) and accuracy_at(curve, 1.0) == pytest.approx(0.5)
    assert accuracy_at(curve, 0.1) == 1.0  # at least one record


def test_coverage_ties_take_the_expected_accuracy():
    """Two records of equal confidence, one right: either order is as likely, so the curve is 0.5 then 0.5."""
    assert coverage_curve([conf(True, 0.7), conf(False, 0.7)]) == pytest.approx([0.5, 0.5])
    assert coverage_curve([conf(False, 0.7), conf(True, 0.7)]) == pytest.approx([0.5, 0.5])
    # a perfect ranking beats no ranking: area above the accuracy
    ranked = coverage_curve([conf(True, 0.9), conf(True, 0.8), conf(False, 0.2), conf(False, 0.1)])
    flat = coverage_curve([conf(True, 0.5), conf(True, 0.5), conf(False, 0.5), conf(False, 0.5)])
    assert coverage_area(ranked) > coverage_area(flat) == pytest.approx(0.5)


def test_coverage_by_agreement_breaks_ties_by_mean_prob():
    records = [conf(False, 0.9, 0.5), conf(True, 0.2, 1.0), conf(True, 0.6, 0.5)]
    assert coverage_curve(records, "agreement") == pytest.approx([1.0, 0.5, 2 / 3])  # 1.0; then 0.9 before 0.6
    assert coverage_curve([conf(True, 0.5)], "agreement") is None  # no agreement on any record
    with pytest.raises(ValueError, match="--confidence"):
        coverage_curve(records, "entropy")


def test_coverage_by_the_chooser_s_calibrated_confidence():
    records = [dict(conf(False, 0.9), confidence=0.2), dict(conf(True, 0.1), confidence=0.8),
               dict(conf(True, 0.5), confidence=0.6)]
    assert coverage_curve(records, "confidence") == pytest.approx([1.0, 1.0, 2 / 3])  # 0.8, 0.6, then 0.2
    assert coverage_curve([conf(True, 0.5)], "confidence") is None  # no chooser confidence on any record


def test_report_prints_the_area_and_draws_the_curve(runs, tmp_path, capsys):
    import matplotlib.image

    origin, per_prompt, avg = runs
    probs = [0.9, 0.2, 0.6, 0.4]  # origin: q1 right (0.9), q2 wrong, q3 wrong, q4 right (0.4)
    path = origin / "predictions.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(dict(r, mean_prob=p)) + "\n" for r, p in zip(recs, probs)))
    out, _ = main([str(origin), str(avg), "--out", str(tmp_path / "rep.md")])
    printed = capsys.readouterr().out
    rows = [r for r in table_rows(printed.split("\n\n")[2]) if r and r[0] in ("origin_x", "avg_x")]  # after the gains
    # origin ranked 0.9 (T), 0.6 (F), 0.4 (T), 0.2 (F): curve 1, 1/2, 2/3, 1/2 -> area 66.7
    assert rows[0][:5] == ["origin_x", "origin", "mean_prob", "4", "66.7"]
    assert rows[0][5:] == ["100.0%", "100.0%", "50.0%", "66.7%", "50.0%"]
    assert rows[1][4:] == ["–"] * 6  # avg_x has no confidences: said, not invented
    assert "no mean_prob on the records of avg_x" in printed
    assert "## Accuracy against coverage" in out.read_text()
    image = matplotlib.image.imread(tmp_path / "rep_coverage.png")
    assert image.shape[0] > 200 and image[..., :3].std() > 0.05
