"""Make the shipped multiple-choice example ``selfens_pl/resources/choice_myriadlama.jsonl`` from MyriadLAMA facts.

    python scripts/make_choice_file.py            # reads ../shared/data/myriadlama/{dev,dev600}.jsonl

Each item is one fact (Zhao et al. 2024, MyriadLAMA; see selfens_pl/resources/NOTICE.txt): ``question`` its first
manual paraphrase (a sentence with ``[MASK]``), ``paraphrases`` its other manual paraphrases, ``options`` its first
answer and 3 distractors, ``gold`` the answer's index (its position drawn, so it is uniform over 0..3).

Distractors are other facts' first answers *of the same relation*, so the options are of one type (countries with
countries, professions with professions) and the choice is not trivial: a fact's relation is known by its manual
templates (each paraphrase with the fact's subject replaced by ``[X]``; the subject recovered as the text common to
all its paraphrases, :func:`selfens_pl.data.content_free.recover_subject`), and two facts sharing a template share
the relation. A distractor is never one of the fact's own answer aliases (case-insensitive) nor repeats another
option. Only facts with a recovered subject and at least 3 such distractors are kept; ``--n`` of them are drawn.
Everything is drawn from ``random.Random(f"{seed}:{uuid}")`` (per fact) and ``random.Random(seed)`` (which facts):
the same inputs give the same file, byte for byte.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

from selfens_pl.data.content_free import recover_subject
from selfens_pl.data.sources.myriadlama import load_myriadlama_groups

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INPUTS = [ROOT / "../shared/data/myriadlama/dev.jsonl", ROOT / "../shared/data/myriadlama/dev600.jsonl"]
DEFAULT_OUT = ROOT / "selfens_pl/resources/choice_myriadlama.jsonl"


def templates(fact: dict) -> set[str] | None:
    """The fact's manual templates (subject -> ``[X]``), or ``None`` when its subject cannot be recovered."""
    subject = recover_subject(fact["manual_paraphrases"] + fact["auto_paraphrases"])
    if subject is None:
        return None
    return {p.replace(subject, "[X]") for p in fact["manual_paraphrases"]}


def items(facts: list[dict], n: int, seed: int, distractors: int = 3) -> list[dict]:
    """``n`` multiple-choice items (module docstring), in the order the facts are drawn."""
    keyed = [(fact, templates(fact)) for fact in facts]
    keyed = [(fact, keys) for fact, keys in keyed if keys]
    by_template: dict[str, list[int]] = defaultdict(list)
    for i, (_, keys) in enumerate(keyed):
        for key in keys:
            by_template[key].append(i)
    out = []
    for i, (fact, keys) in enumerate(keyed):
        aliases = {a.strip().lower() for a in fact["answers"]}
        kin = sorted({j for key in keys for j in by_template[key] if j != i})  # same-relation facts
        pool = sorted({keyed[j][0]["answers"][0].strip() for j in kin} - {""})
        pool = [a for a in pool if a.lower() not in aliases]
        if len(pool) < distractors:
            continue
        rng = random.Random(f"{seed}:{fact['uuid']}")
        options = [fact["answers"][0].strip(), *rng.sample(pool, distractors)]
        gold = rng.randrange(len(options))
        options[0], options[gold] = options[gold], options[0]
        out.append({"id": fact["uuid"], "question": fact["manual_paraphrases"][0],
                    "paraphrases": fact["manual_paraphrases"][1:], "options": options, "gold": gold})
    if len(out) < n:
        raise SystemExit(f"only {len(out)} facts have {distractors} same-relation distractors; asked for {n}")
    chosen = sorted(random.Random(seed).sample(range(len(out)), n))
    return [out[i] for i in chosen]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", nargs="+", type=Path, default=DEFAULT_INPUTS,
                        help="MyriadLAMA files grouped by fact (default: the shared dev and dev600 files)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--n", type=int, default=300, help="items (facts) to keep")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    facts = [fact for path in args.inputs for fact in load_myriadlama_groups(str(path))]
    made = items(facts, args.n, args.seed)
    args.out.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in made), encoding="utf-8")
    golds = [item["gold"] for item in made]
    print(f"{args.out}: {len(made)} items from {len(facts)} facts; gold positions "
          f"{[golds.count(g) for g in range(4)]}")


if __name__ == "__main__":
    main()
