"""How much of what the extra blocks gain is a demonstration's answer copied? A baseline with no model.

With ``demo_selection: similar`` a group's extra blocks hold the pool questions nearest to its question; on
WebQuestions the train split asks about the same entity many times, often with the same answer, so copying the
nearest demonstration's answer is already a method. This script reads a sweep config's ``data:`` (the groups and
blocks the sweep asked with, M = the largest of its ``ms``), and prints, for the selection given (both by default):

* ``gold among the demos``: some demonstration of the extra blocks has a right answer (lemma rule);
* ``nearest demo's answer``: the first demonstration of block 1 (the most similar one under ``similar``), as an
  answer: its accuracy, and its gain over origin with the paired bootstrap 95% interval;
* ``demos' most common answer``: the answer most of the extra blocks' demonstrations give (lemma rule; ties to
  the more similar one): a nearest-neighbour vote;
* for every run under ``--runs`` (a sweep's ``runs/<method>_k<K>_m<M>/``): the run's gain over both (similar).

Both copies are the package's controls (:class:`selfens_pl.heads.NearestAnswerHead`, ``copy_nearest`` and
``copy_vote``), which a sweep runs and reports beside every method (docs/methods.md, 'Controls'); this script adds
the random-block row and the 'gold among the demos' column.

    python scripts/nearest_answer_baseline.py studies/webqa_slices/sweep_webqa.yaml --runs outputs/sweep_webqa/runs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from selfens_pl.data.datamodule import ParaphraseDataModule
from selfens_pl.engine.members import demo_answers
from selfens_pl.heads.controls import demos_vote, nearest_answer
from selfens_pl.scoring.agreement import Lemmas
from selfens_pl.scoring.metrics import is_match
from selfens_pl.scoring.stats import paired_bootstrap


def groups_with_blocks(config: str, selection: str) -> list[dict]:
    cfg = yaml.safe_load(Path(config).read_text())
    data = dict(cfg["data"], demo_selection=selection, demo_blocks=max(cfg.get("ms", [1])))
    if data["demo_blocks"] < 2:
        raise SystemExit(f"{config}: ms {cfg.get('ms')} has no extra block to copy from")
    dm = ParaphraseDataModule(**data)
    dm.setup("predict")
    return dm.groups


def run_correct(run_dir: Path) -> dict[str, float]:
    with (run_dir / "predictions.jsonl").open() as f:
        return {r["id"]: float(r["correct"]) for r in map(json.loads, f)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="a sweep config (its data: section and ms are read)")
    ap.add_argument("--selection", choices=["similar", "random", "both"], default="both")
    ap.add_argument("--runs", help="a sweep's runs/ folder: every run there is compared with the copy")
    ap.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args()
    runs = {p.name: run_correct(p) for p in sorted(Path(args.runs).iterdir())} if args.runs else {}
    origin = runs.get("origin_k1_m1")
    print("| selection | n | gold among the extra blocks' demos | nearest demo's answer | vs origin "
          "| demos' most common answer | vs origin |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    copies = {}
    for selection in (["similar", "random"] if args.selection == "both" else [args.selection]):
        groups, lemmas = groups_with_blocks(args.config, selection), Lemmas()
        among = [any(is_match(a, g["answers"]) for a in demo_answers(g)) for g in groups]
        # the copy controls' own definitions (NearestAnswerHead: copy_nearest, copy_vote)
        copy = {str(g["id"]): float(is_match(nearest_answer(g), g["answers"])) for g in groups}
        mode = {str(g["id"]): float(is_match(demos_vote(g, lemmas)[0], g["answers"])) for g in groups}
        copies[selection] = (copy, mode)
        cells = []
        for baseline in (copy, mode):
            vs = ""
            if origin is not None:
                ids = sorted(baseline)
                vs = paired_bootstrap([baseline[i] for i in ids], [origin[i] for i in ids], args.resamples).format()
            cells.append(f"{100 * sum(baseline.values()) / len(groups):.1f}% | {vs}")
        print(f"| {selection} | {len(groups)} | {100 * sum(among) / len(groups):.1f}% | {' | '.join(cells)} |")
    if runs and "similar" in copies:
        copy, mode = copies["similar"]
        ids = sorted(copy)
        print("\n| run | accuracy | vs the nearest (similar) demo's answer | vs the (similar) demos' most common "
              "answer |\n| --- | --- | --- | --- |")
        for name, correct in runs.items():
            if set(correct) != set(copy):
                raise SystemExit(f"{args.runs}/{name}: its facts are not the config's")
            gains = [paired_bootstrap([correct[i] for i in ids], [base[i] for i in ids], args.resamples).format()
                     for base in (copy, mode)]
            print(f"| {name} | {100 * sum(correct.values()) / len(ids):.1f} | {' | '.join(gains)} |")


if __name__ == "__main__":
    main()
