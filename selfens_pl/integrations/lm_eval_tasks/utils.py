"""The shipped lm_eval tasks' data and metrics (their YAMLs name these as ``!function utils.<name>``), read from the
package's demo set (``selfens_pl/resources/demo_webqa.jsonl``: 40 WebQuestions train questions, 5 written
paraphrases each) so the tasks run offline.

* ``selfens_webqa_demo`` (generate_until): the package's prompt, ``"{instruction}\\n\\n{five Q/A examples}\\n\\nQ:
  {question}\\nA:"``, byte for byte what ``predict`` asks (:mod:`selfens_pl.data.prompts`), scored with the
  package's lemma match (``accuracy``) and SQuAD exact match, on the first line of the answer as ``predict`` does;
* ``selfens_webqa_choice`` (multiple_choice): the same questions, each with four options: its gold answer and the
  gold answers of the next three questions of its kind (capitals, currencies, languages, the rest), the gold one at
  position ``i mod 4`` for question ``i``: deterministic, no randomness to seed.
"""

from __future__ import annotations

import json
from pathlib import Path

from datasets import Dataset, DatasetDict

import selfens_pl.integrations.lm_eval  # noqa: F401  (registers --model selfens_pl when lm_eval reads these tasks)
from selfens_pl.data.datamodule import demo_few_shot, demo_path
from selfens_pl.data.demos import built_in_pool
from selfens_pl.jsonl import read_jsonl
from selfens_pl.scoring.metrics import SquadScores, is_match

KINDS = ("capital", "currency", "language")  #: a question's kind: the first of these words in it, else "other"


def _demo_records() -> list[dict]:
    return [json.loads(line) for line in Path(demo_path()).read_text(encoding="utf-8").splitlines() if line.strip()]


def webqa_demo(**_metadata) -> DatasetDict:
    """The demo questions as docs ``{id, question, paraphrases, answers}`` (``question``: paraphrase 0), and the
    shipped WebQuestions train split as the ``train`` docs ``{question, answers}`` (the demonstrations of
    ``pool=task``, the same as the built-in pool ``webquestions-train``)."""
    rows = [{"id": r["id"], "question": r["paraphrases"][0], "paraphrases": r["paraphrases"], "answers": r["answers"]}
            for r in _demo_records()]
    train = [{"question": r["question"], "answers": r["answers"]} for r in read_jsonl(built_in_pool(
        "webquestions-train", "webqa"))]
    return DatasetDict({"test": Dataset.from_list(rows), "train": Dataset.from_list(train)})


def webqa_few_shot() -> list[dict]:
    """The package's five few-shot examples as docs of ``selfens_webqa_demo``."""
    return [{"question": e["question"], "answers": [e["answer"]]} for e in demo_few_shot()]


def _kind(question: str) -> str:
    return next((k for k in KINDS if k in question), "other")


def webqa_choice(**_metadata) -> DatasetDict:
    """The demo questions as four-option docs ``{id, question, paraphrases, choices, label}`` (module docstring)."""
    records = _demo_records()
    rows = []
    for i, rec in enumerate(records):
        kind = [r for r in records if _kind(r["paraphrases"][0]) == _kind(rec["paraphrases"][0])]
        at = kind.index(rec)
        gold = rec["answers"][0]
        others = []
        for step in range(1, len(kind)):
            answer = kind[(at + step) % len(kind)]["answers"][0]
            if answer != gold and answer not in others:
                others.append(answer)
            if len(others) == 3:
                break
        label = i % 4
        rows.append({"id": rec["id"], "question": rec["paraphrases"][0], "paraphrases": rec["paraphrases"],
                     "choices": others[:label] + [gold] + others[label:], "label": label})
    return DatasetDict({"test": Dataset.from_list(rows)})


def choice_few_shot() -> list[dict]:
    """The five few-shot examples as one-option docs of ``selfens_webqa_choice`` (only their answer is shown)."""
    return [{"question": e["question"], "choices": [e["answer"]], "label": 0} for e in demo_few_shot()]


def process_webqa(doc: dict, results: list[str]) -> dict:
    """``accuracy`` (the package's lemma match) and ``exact_match`` (SQuAD's, 0/1) of the answer's first line."""
    prediction = results[0].strip().split("\n")[0].strip()
    squad = SquadScores()
    squad.update([prediction], [doc["answers"]])
    return {"accuracy": float(is_match(prediction, doc["answers"])),
            "exact_match": float(squad.compute()["exact_match"]) / 100}
