"""How well does the model's own yes/no judgement (``paraphrase --judge true``) tell paraphrases from other
questions? Positives: the shipped demo set's hand-written paraphrases paired with their question (40 x 4);
negatives: each question paired with the first hand-written paraphrase of the next demo question (40; the demo set
is sorted by topic, so neighbours often share words). Prints the share of each kind the judge accepts at several
margins, and the ROC AUC.

    python scripts/paraphrase_judge.py [--model smollm2-135m-instruct]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from selfens_pl.data.datamodule import demo_path
from selfens_pl.engine.models import load_decoder
from selfens_pl.scoring.paraphrase_checks import EquivalenceJudge


def auc(pos: list[float], neg: list[float]) -> float:
    """P(score of a random positive > score of a random negative), ties counting half."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    groups = [json.loads(line) for line in Path(demo_path()).read_text().splitlines()]
    positives = [(g["paraphrases"][0], p) for g in groups for p in g["paraphrases"][1:]]
    negatives = [(g["paraphrases"][0], groups[(i + 1) % len(groups)]["paraphrases"][1]) for i, g in enumerate(groups)]
    start = time.perf_counter()
    judge = EquivalenceJudge(load_decoder(args.model, 1, args.device))
    pos, neg = judge.scores(positives), judge.scores(negatives)
    print(f"model {args.model}: {len(pos)} paraphrase pairs, {len(neg)} other-question pairs, "
          f"{time.perf_counter() - start:.0f}s\n")
    print("| margin (log p(yes) - log p(no)) | paraphrases accepted | other questions accepted |")
    print("| --- | --- | --- |")
    for margin in (-2.0, -1.0, 0.0, 1.0, 2.0):
        print(f"| {margin:+.1f} | {sum(s >= margin for s in pos) / len(pos):.1%} | "
              f"{sum(s >= margin for s in neg) / len(neg):.1%} |")
    print(f"\nROC AUC {auc(pos, neg):.3f}; mean score: paraphrases {sum(pos) / len(pos):+.2f}, "
          f"other questions {sum(neg) / len(neg):+.2f}")


if __name__ == "__main__":
    main()
