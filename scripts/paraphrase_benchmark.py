"""The labelled paraphrase benchmark (tests/fixtures/paraphrase_benchmark/, README there): load its parts, and
rebuild the parts that are derived from shipped data (the demo set, MyriadLAMA's dev facts) with a fixed seed.

    python scripts/paraphrase_benchmark.py            # rebuild the derived parts, print their sizes
    python scripts/paraphrase_benchmark.py --check    # exit 1 when a shipped derived part differs from a rebuild

Every row: ``{part, split, id, original, candidate, label, note?}``; ``label`` 1 = asks for the same information
(a paraphrase), 0 = does not. ``split`` is ``tune`` (the rows the checks' thresholds were chosen on) or
``heldout`` (never used to choose anything). scripts/paraphrase_checks_eval.py prints the table.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = ROOT / "tests" / "fixtures" / "paraphrase_benchmark"
MYRIADLAMA_DEV = ROOT.parent / "shared" / "data" / "myriadlama" / "dev.jsonl"
SEED = 0

#: part -> (file, what it holds); the hand-made parts are near_misses.jsonl and generated.jsonl.
PARTS = {
    "human_questions": ("human_questions.jsonl", "the demo set's hand-written paraphrases vs their question"),
    "human_statements": ("human_statements.jsonl", "MyriadLAMA manual paraphrases of one fact, pairwise"),
    "different_questions": ("different_questions.jsonl", "a demo question vs a paraphrase of another one"),
    "different_statements": ("different_statements.jsonl", "a MyriadLAMA fact vs another fact's paraphrase"),
    "near_misses": ("near_misses.jsonl", "hand-written: same entity and wording, other information asked"),
    "generated": ("generated.jsonl", "the embedded model's samples, labelled by reading"),
}
DERIVED = ("human_questions", "human_statements", "different_questions", "different_statements")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def demo_groups() -> list[dict]:
    from selfens_pl.data.datamodule import demo_path

    return read_jsonl(Path(demo_path()))


def demo_split(index: int) -> str:
    """Even demo questions (0, 2, ...) are the tuning half, odd ones held out."""
    return "tune" if index % 2 == 0 else "heldout"


def generated_split(question_id: str) -> str:
    """Generated candidates of train questions 400-439 tune, 440-479 are held out."""
    return "tune" if int(question_id.rsplit("-", 1)[1]) < 440 else "heldout"


def row(part, split, id_, original, candidate, label, **extra) -> dict:
    return {"part": part, "split": split, "id": id_, "original": original, "candidate": candidate, "label": label,
            **extra}


def build_human_questions(groups: list[dict]) -> list[dict]:
    return [row("human_questions", demo_split(g_i), f"{g['id']}:{p_i}", g["paraphrases"][0], p, 1)
            for g_i, g in enumerate(groups) for p_i, p in enumerate(g["paraphrases"][1:], 1)]


def build_different_questions(groups: list[dict], seed: int = SEED) -> list[dict]:
    """One negative per positive: the question vs a random paraphrase (1-4) of another random demo question."""
    rng, out = random.Random(seed), []
    for g_i, g in enumerate(groups):
        for p_i in range(1, len(g["paraphrases"])):
            o_i = rng.choice([i for i in range(len(groups)) if i != g_i])
            c_i = rng.randrange(1, len(groups[o_i]["paraphrases"]))
            out.append(row("different_questions", demo_split(g_i), f"{g['id']}:{p_i}~{groups[o_i]['id']}:{c_i}",
                           g["paraphrases"][0], groups[o_i]["paraphrases"][c_i], 0))
    return out


def build_human_statements(facts: list[dict]) -> list[dict]:
    """Each fact's first manual paraphrase vs its second and third (the statement and cloze form; never tuned on)."""
    return [row("human_statements", "heldout", f"{f['uuid']}:0-{j}", f["manual_paraphrases"][0],
                f["manual_paraphrases"][j], 1) for f in facts for j in range(1, len(f["manual_paraphrases"]))]


def build_different_statements(facts: list[dict], seed: int = SEED) -> list[dict]:
    """Each fact's first manual paraphrase vs a random manual paraphrase of another random fact."""
    rng, out = random.Random(seed), []
    for f_i, f in enumerate(facts):
        o_i = rng.choice([i for i in range(len(facts)) if i != f_i])
        c_i = rng.randrange(len(facts[o_i]["manual_paraphrases"]))
        out.append(row("different_statements", "heldout", f"{f['uuid']}:0~{facts[o_i]['uuid']}:{c_i}",
                       f["manual_paraphrases"][0], facts[o_i]["manual_paraphrases"][c_i], 0))
    return out


def build_derived(myriadlama: Path = MYRIADLAMA_DEV) -> dict[str, list[dict]]:
    groups = demo_groups()
    facts = read_jsonl(myriadlama)
    return {"human_questions": build_human_questions(groups), "human_statements": build_human_statements(facts),
            "different_questions": build_different_questions(groups),
            "different_statements": build_different_statements(facts)}


def load_part(name: str, folder: Path = BENCHMARK) -> list[dict]:
    """The rows of one part; the hand-made parts get their ``part`` and ``split`` here."""
    rows = read_jsonl(folder / PARTS[name][0])
    if name == "near_misses":
        index = {g["id"]: i for i, g in enumerate(demo_groups())}
        return [row(name, demo_split(index[r["id"]]), r["id"], r["original"], r["candidate"], r["label"],
                    note=r["note"]) for r in rows]
    if name == "generated":
        return [row(name, generated_split(r["id"]), f"{r['id']}:seed{r['seed']}", r["original"], r["candidate"],
                    r["label"], **({"note": r["note"]} if "note" in r else {})) for r in rows]
    return rows


def load_benchmark(folder: Path = BENCHMARK) -> dict[str, list[dict]]:
    return {name: load_part(name, folder) for name in PARTS}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare the shipped derived parts with a rebuild")
    args = parser.parse_args()
    built = build_derived()
    differ = []
    for name, rows in built.items():
        path = BENCHMARK / PARTS[name][0]
        if args.check:
            if not path.is_file() or read_jsonl(path) != rows:
                differ.append(name)
        else:
            write_jsonl(path, rows)
        print(f"{name}: {len(rows)} rows ({sum(r['label'] for r in rows)} paraphrases)")
    if differ:
        print(f"differ from a rebuild: {differ}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
