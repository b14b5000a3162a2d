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
        "method": "origin", "model": "tiny", "n": 4, "records": 4, "accuracy": 0.5, "exact_match": 25.0,
        "f1": 37.5, "seconds": 2.0, "questions_per_s": 2.0},
        [rec(q, "origin", 0, hits[0]) for q, hits in PER_PROMPT.items()])
    per_prompt = write_run(out / "per_prompt_x", {
        "method": "per_prompt", "model": "tiny", "n": 4, "records": 12, "accuracy": 4 / 12, "exact_match": 10.0,
        "f1": 20.4, "seconds": 8.0, "questions_per_s": 0.5}, per_prompt_records())
    avg = write_run(out / "avg_x", {
        "method": "avg", "model": "tiny", "n": 4, "records": 4, "accuracy": 0.75, "exact_match": 50.0,
        "f1": 62.5, "seconds": 4.0, "questions_per_s": 1.0},
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


def test_report_table_values(runs, tmp_path, capsys):
    origin, per_prompt, avg = runs
    out, png = main([str(origin), str(per_prompt), str(avg)])
    assert out == tmp_path / "outputs" / "report.md"  # default: first dir's parent
    assert png == out.with_suffix(".png")
    text = out.read_text()
    printed = capsys.readouterr().out
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


def test_missing_summary_names_the_dir(runs, tmp_path):
    broken = tmp_path / "outputs" / "half_done"
    broken.mkdir()
    (broken / "predictions.jsonl").write_text(json.dumps(rec("q1", "avg", None, True)) + "\n")
    with pytest.raises(FileNotFoundError, match=r"half_done: no summary\.json") as e:
        main([str(runs[0]), str(broken)])
    assert "\n" not in str(e.value)
    assert not (tmp_path / "outputs" / "report.md").exists()  # nothing written before every run is read


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
