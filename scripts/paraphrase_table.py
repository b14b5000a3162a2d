"""Print the tables of the paraphrase study (scripts/paraphrase_study.sh) from what it wrote under --out.

    python scripts/paraphrase_table.py [--out outputs/paraphrase_study]

Table 1 (dev, train questions 200-299): per temperature, the paraphrase statistics and the accuracy of origin,
avg and max over the checked groups (and of avg over the unchecked attempt-0 samples, when that run exists).
Table 2 (held-out, the first 200 train questions): every method over the checked groups.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from selfens_pl.scoring.paraphrase_checks import paraphrase_statistics


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def summary(out: Path, name: str) -> dict | None:
    path = out / "runs" / name / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def acc(out: Path, name: str) -> str:
    s = summary(out, name)
    return "–" if s is None else pct(s["accuracy"])


def secs(out: Path, name: str) -> str:
    s = summary(out, name)
    return "–" if s is None else f"{s['seconds']:.0f}"


def stats_cells(path: Path) -> list[str]:
    if not path.is_file():
        return ["–"] * 4
    st = paraphrase_statistics(read_jsonl(path))
    failed = ", ".join(f"{k} {v}" for k, v in st["failed"].items())
    return [pct(st["acceptance"]), f"{st['mean_kept']:.2f}", f"{st['sizes'].get(0, 0)}", failed]


def per_prompt_cells(out: Path, name: str) -> str:
    path = out / "runs" / name / "predictions.jsonl"
    if not path.is_file():
        return "–"
    recs = read_jsonl(path)
    orig = [r["correct"] for r in recs if r["paraphrase_index"] == 0]
    gen = [r["correct"] for r in recs if r["paraphrase_index"] != 0]
    by_id: dict[str, bool] = {}
    for r in recs:
        by_id[r["id"]] = by_id.get(r["id"], False) or bool(r["correct"])
    return (f"original {pct(sum(orig) / len(orig))} / checked paraphrases {pct(sum(gen) / len(gen) if gen else None)} "
            f"({len(gen)} answers); oracle {pct(sum(by_id.values()) / len(by_id))}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="outputs/paraphrase_study")
    out = Path(parser.parse_args().out)

    print("dev: WebQuestions train questions 200-299, top_p 0.9\n")
    print("| temperature | acceptance | paraphrases kept per question | questions left with none | rejections by check "
          "| origin | avg | max | avg, unchecked samples |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for t in ("0.5", "0.7", "1.0", "1.5"):
        cells = stats_cells(out / f"dev_t{t}.jsonl")
        print(f"| {t} | " + " | ".join(cells) + f" | {acc(out, 'dev_origin')} | {acc(out, f'dev_t{t}_avg')} | "
              f"{acc(out, f'dev_t{t}_max')} | {acc(out, f'dev_t{t}_unchecked_avg')} |")

    print("\nheld-out: the first 200 WebQuestions train questions\n")
    cells = stats_cells(out / "heldout.jsonl")
    print(f"acceptance {cells[0]}, {cells[1]} paraphrases kept per question, {cells[2]} questions with none; "
          f"rejections: {cells[3]}\n")
    print("| method | accuracy | vs origin | seconds |")
    print("| --- | --- | --- | --- |")
    base = summary(out, "heldout_origin")
    for label, name in [("origin", "heldout_origin"), ("per_prompt", "heldout_per_prompt"), ("avg", "heldout_avg"),
                        ("prob_avg", "heldout_prob_avg"), ("entropy_weighted", "heldout_entropy_weighted"),
                        ("vote", "heldout_vote"), ("flex shared_prefix", "heldout_flex_shared_prefix"),
                        ("max", "heldout_max"), ("avg, unchecked samples", "heldout_unchecked_avg")]:
        s = summary(out, name)
        if s is None:
            continue
        delta = "" if base is None or name in ("heldout_origin", "heldout_per_prompt") else \
            f"{100 * (s['accuracy'] - base['accuracy']):+.1f}"
        shown = per_prompt_cells(out, name) if name.endswith("per_prompt") else pct(s["accuracy"])
        print(f"| {label} | {shown} | {delta} | {secs(out, name)} |")


if __name__ == "__main__":
    main()
