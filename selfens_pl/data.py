"""``ParaphraseDataModule``: paraphrase groups ``{id, paraphrases[N], answers[], confidences?}`` in batches.

Each batch is ``{"groups": [group, ...], "template": PromptTemplate}``: the groups to answer and the instruction +
few-shot block they are asked with, so a model needs nothing else from the data module.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Literal

from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from selfens_pl.prompts import MYRIADLAMA_FEW_SHOT, MYRIADLAMA_INSTRUCTION, WEBQA_INSTRUCTION, PromptTemplate
from selfens_pl.sources import (
    group_myriadlama,
    load_myriadlama_groups,
    load_myriadlama_rows,
    load_webqa,
    myriadlama_groups,
    sample_few_shot,
    split_facts,
    webqa_groups,
)
from selfens_pl.sources.webqa import check_record, check_str, check_str_list, read_records

DEMO = "demo"


def demo_path() -> str:
    """The shipped demo set: 40 WebQuestions train questions, 5 hand-written paraphrases each."""
    return str(resources.files("selfens_pl.resources") / "demo_webqa.jsonl")


def demo_few_shot() -> list[dict]:
    """The five WebQuestions train examples the demo uses as its few-shot block."""
    return json.loads((resources.files("selfens_pl.resources") / "webqa_fewshot.json").read_text())


def load_groups(path: str) -> list[dict]:
    """Read a JSONL/JSON/parquet file of groups, one clear error naming the line and field otherwise."""
    unit, rows = read_records(path, allow_hub=False)
    groups, seen = [], {}
    for number, rec in rows:
        check_record(path, unit, number, rec)
        if "id" not in rec or rec["id"] in (None, ""):
            raise ValueError(f"{path}: {unit} {number}: field 'id' is missing")
        paraphrases = check_str_list(path, unit, number, rec, "paraphrases")
        for p in paraphrases:
            if not p.strip():
                raise ValueError(f"{path}: {unit} {number} (record {rec['id']!r}): an empty paraphrase")
        answers = check_str_list(path, unit, number, rec, "answers", allow_empty=True) if "answers" in rec else []
        conf = rec.get("confidences")
        if conf is not None and (len(conf) != len(paraphrases) or not all(0 <= float(c) <= 1 for c in conf)):
            raise ValueError(f"{path}: {unit} {number} (record {rec['id']!r}): 'confidences' must hold one value "
                             "in [0, 1] per paraphrase")
        key = str(rec["id"])
        if key in seen:
            raise ValueError(f"{path}: {unit} {number}: id {key!r} repeats {unit} {seen[key]}")
        seen[key] = number
        groups.append({"id": key, "paraphrases": list(paraphrases), "answers": list(answers),
                       "confidences": None if conf is None else [float(c) for c in conf]})
    if not groups:
        raise ValueError(f"{path}: no records")
    return groups


def load_confidences(path: str) -> dict[str, list[float]]:
    """``{id: [confidence per paraphrase]}`` from a JSONL file of ``{"id", "confidences"}``."""
    unit, rows = read_records(path, allow_hub=False)
    table = {}
    for number, rec in rows:
        check_record(path, unit, number, rec)
        check_str(path, unit, number, {"id": str(rec.get("id", ""))}, "id")
        conf = rec.get("confidences")
        if not isinstance(conf, list) or not all(isinstance(c, (int, float)) and 0 <= c <= 1 for c in conf):
            raise ValueError(f"{path}: {unit} {number}: field 'confidences' must be a list of numbers in [0, 1]")
        table[str(rec["id"])] = [float(c) for c in conf]
    return table


class GroupDataset(Dataset):
    def __init__(self, groups: list[dict]):
        self.groups = groups

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict:
        return self.groups[index]


class ParaphraseDataModule(LightningDataModule):
    """Paraphrase groups for predict (and fit/validate, for fine-tuning runs)."""

    def __init__(
        self,
        path: str = DEMO,
        source: Literal["groups", "webqa", "myriadlama"] = "groups",
        task: Literal["webqa", "myriadlama"] = "webqa",
        split: str = "test",
        limit: int | None = None,
        num_paraphrases: int | None = None,
        num_manual: int = 1,
        num_auto: int = 0,
        test_size: int = 2000,
        confidences: str | None = None,
        instruction: str | None = None,
        few_shot: list[dict] | None = None,
        few_shot_source: str | None = None,
        num_few_shot: int = 5,
        few_shot_seed: int = 42,
        batch_size: int = 8,
        num_workers: int = 0,
    ):
        """
        Args:
            path: Groups file (JSONL of ``{id, paraphrases, answers, confidences?}``), ``demo`` for the shipped demo
                set, or for ``source=webqa|myriadlama`` a hub id or local file in that dataset's schema.
            source: Schema of ``path``: ``groups``; ``webqa`` (``question, answers, url``: one paraphrase per
                group); ``myriadlama`` (hub rows ``uuid, sub_ent, template, ...``, or a local file already grouped
                with ``manual_paraphrases`` / ``auto_paraphrases``).
            task: Picks the default instruction and few-shot block: ``webqa`` or ``myriadlama``.
            split: Dataset split for hub sources (MyriadLAMA: the split the test facts are drawn from).
            limit: Answer only the first ``limit`` groups.
            num_paraphrases: Keep the first ``num_paraphrases`` paraphrases of every group (a group with fewer is
                an error).
            num_manual: MyriadLAMA: manual templates per fact (chosen reproducibly by fact id).
            num_auto: MyriadLAMA: automatic templates per fact.
            test_size: MyriadLAMA hub rows: facts in the deterministic test split (seed ``few_shot_seed``).
            confidences: JSONL of ``{id, confidences}`` (from ``python -m selfens_pl confidence``) for weighted methods.
            instruction: Instruction text; default: the task's standard instruction.
            few_shot: Explicit few-shot examples ``[{question, answer}]``; ``[]`` for zero-shot.
            few_shot_source: WebQA-schema source (hub id or file) to sample ``num_few_shot`` examples from.
            num_few_shot: How many few-shot examples to sample from ``few_shot_source``.
            few_shot_seed: Seed for sampling few-shot examples and splits.
            batch_size: Groups per batch (every paraphrase of a group rides in the same batch).
            num_workers: DataLoader workers.
        """
        super().__init__()
        self.save_hyperparameters()
        self.groups: list[dict] | None = None
        self.template: PromptTemplate | None = None

    # -- loading -------------------------------------------------------------------------------------------------
    def _load(self) -> list[dict]:
        hp = self.hparams
        if hp.source == "groups":
            return load_groups(demo_path() if hp.path == DEMO else hp.path)
        if hp.source == "webqa":
            return webqa_groups(load_webqa(hp.path, hp.split), id_prefix=f"webqa-{hp.split}")
        if hp.source == "myriadlama":
            if _is_grouped_myriadlama(hp.path):
                facts = load_myriadlama_groups(hp.path)
            else:  # hub rows (a hub id or a local file of rows): group by fact, keep the deterministic test split
                _, facts = split_facts(group_myriadlama(load_myriadlama_rows(hp.path, hp.split)), hp.test_size,
                                       hp.few_shot_seed)
            return myriadlama_groups(facts, hp.num_manual, hp.num_auto)
        raise ValueError(f"--data.source={hp.source!r}: choose groups, webqa or myriadlama")

    def _template(self, groups: list[dict]) -> PromptTemplate:
        hp = self.hparams
        instruction = hp.instruction
        if instruction is None:
            instruction = MYRIADLAMA_INSTRUCTION if hp.task == "myriadlama" else WEBQA_INSTRUCTION
        if hp.few_shot is not None:
            few_shot = [{"question": e["question"], "answer": e["answer"]} for e in hp.few_shot]
        elif hp.few_shot_source is not None:
            asked = {p for g in groups for p in g["paraphrases"]}  # never show a test question as an example
            few_shot = sample_few_shot(load_webqa(hp.few_shot_source, "train"), hp.num_few_shot, hp.few_shot_seed,
                                       exclude_questions=asked)
        elif hp.task == "myriadlama":
            few_shot = list(MYRIADLAMA_FEW_SHOT)
        elif hp.path == DEMO:
            few_shot = demo_few_shot()
        else:
            raise ValueError("--data.task=webqa needs --data.few_shot (a list, [] for zero-shot) or "
                             "--data.few_shot_source (e.g. stanfordnlp/web_questions)")
        return PromptTemplate(instruction=instruction, few_shot=few_shot)

    def setup(self, stage: str | None = None) -> None:
        if self.groups is not None:
            return
        hp = self.hparams
        groups = self._load()
        if hp.limit is not None:
            if hp.limit < 1:
                raise ValueError(f"--data.limit must be >= 1, got {hp.limit}")
            groups = groups[: hp.limit]
        if hp.confidences:
            table = load_confidences(hp.confidences)
            for g in groups:
                if g["id"] not in table:
                    raise ValueError(f"record {g['id']!r} has no entry in --data.confidences={hp.confidences}")
                if len(table[g["id"]]) != len(g["paraphrases"]):
                    raise ValueError(f"record {g['id']!r}: {len(table[g['id']])} confidences in "
                                     f"{hp.confidences} for {len(g['paraphrases'])} paraphrases")
                g["confidences"] = table[g["id"]]
        if hp.num_paraphrases is not None:
            for g in groups:
                if len(g["paraphrases"]) < hp.num_paraphrases:
                    raise ValueError(f"record {g['id']!r} has {len(g['paraphrases'])} paraphrases, fewer than "
                                     f"--data.num_paraphrases={hp.num_paraphrases}")
                g["paraphrases"] = g["paraphrases"][: hp.num_paraphrases]
                if g.get("confidences") is not None:
                    g["confidences"] = g["confidences"][: hp.num_paraphrases]
        self.template = self._template(groups)
        self.groups = groups

    # -- loaders -------------------------------------------------------------------------------------------------
    def collate(self, groups: list[dict]) -> dict:
        return {"groups": groups, "template": self.template}

    def _loader(self) -> DataLoader:
        if self.groups is None:
            self.setup()
        return DataLoader(GroupDataset(self.groups), batch_size=self.hparams.batch_size, shuffle=False,
                          num_workers=self.hparams.num_workers, collate_fn=self.collate)

    def predict_dataloader(self) -> DataLoader:
        return self._loader()


def _is_grouped_myriadlama(path: str) -> bool:
    """A local JSONL whose first record is already grouped by fact (``manual_paraphrases``), not hub rows."""
    local = Path(path).expanduser()
    if not local.is_file() or local.suffix != ".jsonl":
        return False
    with local.open(encoding="utf-8") as fh:
        first = next((line for line in fh if line.strip()), "{}")
    return "manual_paraphrases" in json.loads(first)
