"""How well do the paraphrase checks keep real paraphrases and reject the rest? One table over the labelled
benchmark (tests/fixtures/paraphrase_benchmark/, scripts/paraphrase_benchmark.py): the share of each part each
check keeps, alone, as the default set, and with the model's own judge; then the default set on the tuning half and
the held-out half; then the trade-off curve of the two thresholds.

    python scripts/paraphrase_checks_eval.py                 # text checks only (seconds)
    python scripts/paraphrase_checks_eval.py --judge         # + the embedded model's yes/no judge (minutes)

A part of paraphrases (label 1) should be kept (recall); a part of non-paraphrases (label 0) rejected: its "kept"
is the share that slips through. precision / recall pool every part: precision = kept paraphrases / kept pairs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paraphrase_benchmark import load_benchmark  # noqa: E402

from selfens_pl.scoring.paraphrase_checks import TEXT_CHECKS, CheckSettings, text_failures  # noqa: E402

#: (part, label) columns of the table: a part with both labels (generated) gets one column per label.
COLUMNS = [("human_questions", 1), ("human_statements", 1), ("different_questions", 0), ("different_statements", 0),
           ("near_misses", 0), ("generated", 1), ("generated", 0)]
HEADERS = ["human questions", "human statements", "different questions", "different statements", "near misses",
           "generated paraphrases", "generated non-paraphrases"]


def kept_by(rows: list[dict], settings: CheckSettings) -> list[bool]:
    return [not text_failures(r["original"], r["candidate"], settings) for r in rows]


def summarise(bench: dict[str, list[dict]], kept: dict[str, list[bool]], split: str | None = None) -> dict:
    """``{(part, label): (kept, n)}`` plus pooled ``precision`` and ``recall``."""
    out, tp, fp, pos = {}, 0, 0, 0
    for part, label in COLUMNS:
        pairs = [(r, k) for r, k in zip(bench[part], kept[part])
                 if r["label"] == label and (split is None or r["split"] == split)]
        n, k = len(pairs), sum(k for _, k in pairs)
        out[(part, label)] = (k, n)
        if label:
            tp, pos = tp + k, pos + n
        else:
            fp += k
    out["precision"] = tp / (tp + fp) if tp + fp else None
    out["recall"] = tp / pos if pos else None
    return out


def cells(summary: dict) -> list[str]:
    shown = []
    for column in COLUMNS:
        k, n = summary[column]
        shown.append("–" if not n else f"{100 * k / n:.0f}% ({k}/{n})")
    for key in ("precision", "recall"):
        shown.append("–" if summary[key] is None else f"{100 * summary[key]:.0f}%")
    return shown


def table_row(label: str, summary: dict) -> str:
    return f"| {label} | " + " | ".join(cells(summary)) + " |"


def judged(bench: dict[str, list[dict]], text_kept: dict[str, list[bool]], margin: float, scores) -> dict:
    return {part: [k and s >= margin for k, s in zip(text_kept[part], scores[part])] for part in bench}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judge", action="store_true", help="also score every pair with the model's yes/no judge")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="the judge's model")
    parser.add_argument("--margins", type=float, nargs="+", default=[-2.0, 0.0], help="judge margins to show")
    args = parser.parse_args()
    bench = load_benchmark()
    default = CheckSettings()
    start = time.perf_counter()
    print(f"defaults: checks {list(default.checks)}, min_content {default.min_content}, max_new {default.max_new}, "
          f"length {default.min_length_ratio}-{default.max_length_ratio}x\n")
    print("| checks (share of each part kept) | " + " | ".join(HEADERS) + " | precision | recall |")
    print("| --- " * (len(HEADERS) + 3) + "|")
    for check in TEXT_CHECKS:
        settings = CheckSettings(checks=(check,), min_content=default.min_content, max_new=default.max_new)
        print(table_row(f"`{check}` alone", summarise(bench, {p: kept_by(r, settings) for p, r in bench.items()})))
    print(table_row("none (empty / copy only)",
                    summarise(bench, {p: kept_by(r, CheckSettings(checks=())) for p, r in bench.items()})))
    default_kept = {p: kept_by(r, default) for p, r in bench.items()}
    print(table_row("**default set**", summarise(bench, default_kept)))
    print(table_row("default set, tuning half", summarise(bench, default_kept, "tune")))
    print(table_row("default set, held-out half", summarise(bench, default_kept, "heldout")))
    if args.judge:
        from selfens_pl.engine.models import load_decoder
        from selfens_pl.scoring.paraphrase_checks import EquivalenceJudge

        judge = EquivalenceJudge(load_decoder(args.model, 1, "cpu"))
        scores = {p: judge.scores([(r["original"], r["candidate"]) for r in rows]) for p, rows in bench.items()}
        none_kept = {p: kept_by(r, CheckSettings(checks=())) for p, r in bench.items()}
        for margin in args.margins:
            print(table_row(f"judge alone, margin {margin:+g}", summarise(bench, judged(bench, none_kept, margin,
                                                                                        scores))))
            print(table_row(f"default set + judge, margin {margin:+g}",
                            summarise(bench, judged(bench, default_kept, margin, scores))))
    print("\ntrade-off of the two thresholds (default set otherwise):\n")
    print("| min_content | max_new | " + " | ".join(HEADERS) + " | precision | recall |")
    print("| --- " * (len(HEADERS) + 4) + "|")
    for min_content in (0.34, 0.5, 0.67, 1.0):
        for max_new in (0, 1, 2, 99):
            settings = CheckSettings(min_content=min_content, max_new=max_new)
            summary = summarise(bench, {p: kept_by(r, settings) for p, r in bench.items()})
            print(f"| {min_content} | {'any' if max_new == 99 else max_new} | " + " | ".join(cells(summary)) + " |")
    print(f"\n{sum(map(len, bench.values()))} pairs, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
