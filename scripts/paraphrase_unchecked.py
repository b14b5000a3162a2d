"""Rebuild the unchecked groups from a checked paraphrase file: the original plus every first-attempt sample that is
not empty, not the original again and not a repeat (what the reference code's method kept, minus its regeneration of those),
so that checked and unchecked groups are compared on the very same samples without sampling again.

    python scripts/paraphrase_unchecked.py outputs/paraphrase_study/dev_t1.5.jsonl outputs/paraphrase_study/dev_t1.5_unchecked.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from selfens_pl.scoring.paraphrase_checks import copy_key


def unchecked(record: dict, seed: int, k: int, max_retries: int) -> dict:
    """``record``'s attempt-0 samples, in slot order, without the checks (slot ``r`` of attempt ``a`` was sampled
    with ``seed + a * k + r``; a slot with ``a`` rejections was kept at attempt ``a`` unless ``a > max_retries``,
    and the kept paraphrases are in slot order)."""
    rejections: dict[int, dict[int, str]] = {r: {} for r in range(k)}
    for x in record["rejected"]:
        rejections[x["seed"] - seed - x["attempt"] * k][x["attempt"]] = x["text"]
    kept = iter(record["paraphrases"][1:])
    samples = []
    for r in range(k):
        filled = len(rejections[r]) <= max_retries
        text = next(kept) if filled else None
        samples.append(text if not rejections[r] else rejections[r][0])
    group, seen = [record["question"]], {copy_key(record["question"])}
    for text in samples:
        if text and copy_key(text) not in seen:
            group.append(text)
            seen.add(copy_key(text))
    return {"id": record["id"], "paraphrases": group, "answers": record["answers"]}


def main(src: str, dst: str) -> None:
    settings = json.loads(Path(src + ".settings.json").read_text())
    records = [json.loads(line) for line in Path(src).read_text().splitlines() if line.strip()]
    Path(dst).write_text("".join(json.dumps(unchecked(r, settings["seed"], settings["num_paraphrases"],
                                                      settings["max_retries"])) + "\n"
                                 for r in records))
    print(f"wrote {len(records)} unchecked groups to {dst}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
