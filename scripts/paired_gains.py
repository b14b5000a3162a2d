"""Each run's gain over one baseline run, with the paired bootstrap 95% interval: a markdown table.

``report`` gives every run's gain over origin and over the mean single paraphrase; a question such as "do the
demonstrations' answers add to the chooser?" pairs two methods directly. Every run must answer the same facts
(``correct`` per record, one record per fact: a sweep's or predict's output directories; ``dir1+dir2`` for a run
made in parts).

    python scripts/paired_gains.py outputs/sweep_demos_myriadlama/runs/rerank_learned_cv_k3_m3 \\
        outputs/sweep_demos_myriadlama/runs/rerank_learned_demos_cv_k3_m3
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from selfens_pl.scoring.stats import paired_bootstrap


def per_fact(run: Path) -> dict[str, float]:
    """``{fact id: 1.0 if right}`` of one run directory (its ``predictions.jsonl``), or of a run made in parts,
    ``dir1+dir2`` (each part other facts of the same run, e.g. ``--data.start 0 --data.limit 200`` and then
    ``--data.start 200``)."""
    rows = [json.loads(line) for part in str(run).split("+")
            for line in (Path(part) / "predictions.jsonl").read_text(encoding="utf-8").splitlines() if line]
    scores = {str(r["id"]): float(bool(r["correct"])) for r in rows}
    if len(scores) != len(rows):
        raise SystemExit(f"{run}: {len(rows)} records for {len(scores)} facts (one record per fact expected)")
    return scores


def name(run: Path) -> str:
    return "+".join(Path(part).name for part in str(run).split("+"))


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("baseline", type=Path, help="the run every other run is paired against")
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    base = per_fact(args.baseline)
    ids = sorted(base)
    lines = [f"| run | accuracy | vs {name(args.baseline)} |", "| --- | --- | --- |",
             f"| {name(args.baseline)} | {100 * sum(base.values()) / len(ids):.1f} | |"]
    for run in args.runs:
        own = per_fact(run)
        if set(own) != set(base):
            raise SystemExit(f"{run}: answers other facts than {args.baseline} ({len(own)} against {len(base)})")
        gain = paired_bootstrap([own[i] for i in ids], [base[i] for i in ids], args.resamples, args.seed)
        lines.append(f"| {name(run)} | {100 * sum(own.values()) / len(ids):.1f} | {gain.format()} |")
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
