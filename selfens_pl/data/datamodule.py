"""``ParaphraseDataModule``: paraphrase groups ``{id, paraphrases[N], answers[], confidences?}`` in batches.

Each batch is ``{"groups": [group, ...], "template": PromptTemplate}``: the groups to answer and the instruction +
few-shot block they are asked with, so a model needs nothing else from the data module.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Literal

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from selfens_pl.data.demos import DemoSelection, attach_blocks, check_demo_selection, load_pool
from selfens_pl.data.prompts import (MYRIADLAMA_FEW_SHOT, MYRIADLAMA_INSTRUCTION, WEBQA_INSTRUCTION, ChatTemplate,
                                     PromptTemplate, check_chat_template)
from selfens_pl.data.records import check_record, check_str, check_str_list, looks_like_path, read_records
from selfens_pl.data.sources import (
    group_myriadlama,
    is_grouped_myriadlama,
    load_myriadlama_groups,
    load_myriadlama_rows,
    load_webqa,
    myriadlama_groups,
    sample_few_shot,
    split_facts,
    webqa_groups,
)
from selfens_pl.data.sources.choice import is_choice_file, load_choice_groups
from selfens_pl.distributed import data_parallel_shard
from selfens_pl.errors import UserError

DEMO = "demo"

#: The hub datasets whose schema ``--data.source auto`` knows; another hub id needs an explicit source.
HUB_SOURCES = {"stanfordnlp/web_questions": "webqa", "iszhaoxin/MyriadLAMA": "myriadlama"}

Source = Literal["auto", "groups", "webqa", "myriadlama", "choice"]


def auto_source(path: str) -> str:
    """What ``--data.source auto`` reads ``path`` as: ``demo`` (the shipped demo set), ``myriadlama`` (a local file
    grouped by fact, or the MyriadLAMA hub id), ``webqa`` (the WebQuestions hub id) or ``file`` (a local file of
    ``question`` / ``paraphrases`` records, :func:`load_groups` with ``auto``). Another hub id, or a path that does
    not exist, is one error naming the flag."""
    if path == DEMO:
        return DEMO
    if Path(path).expanduser().exists():
        if is_choice_file(path):  # multiple choice: records with options
            return "choice"
        return "myriadlama" if is_grouped_myriadlama(path) else "file"
    if path in HUB_SOURCES:
        return HUB_SOURCES[path]
    if looks_like_path(path):
        raise FileNotFoundError(f"no such file or directory: {path}")  # as every source says it
    raise UserError(f"--data.path={path}: --data.source auto knows the hub datasets {', '.join(HUB_SOURCES)}; "
                     "for another one give --data.source webqa or myriadlama (its schema)")


#: Question files shipped in the package, by ``--data.path`` name: they answer from any working directory (a file
#: of the same name there is read instead only when written as a path, ``./choice-myriadlama``).
SHIPPED_FILES = {"choice-myriadlama": "choice_myriadlama.jsonl"}


def shipped_path(path: str) -> str:
    """The package's copy of the shipped file named ``path`` (:data:`SHIPPED_FILES`), else ``path`` itself."""
    if path in SHIPPED_FILES:
        return str(resources.files("selfens_pl.resources") / SHIPPED_FILES[path])
    return path


def demo_path() -> str:
    """The shipped demo set: 40 WebQuestions train questions, 5 hand-written paraphrases each."""
    return str(resources.files("selfens_pl.resources") / "demo_webqa.jsonl")


def demo_few_shot() -> list[dict]:
    """The five WebQuestions train examples the demo uses as its few-shot block."""
    return json.loads((resources.files("selfens_pl.resources") / "webqa_fewshot.json").read_text())


def load_groups(path: str, auto: bool = False) -> list[dict]:
    """Read a JSONL/JSON/parquet file of groups, one clear error naming the line and field otherwise.

    ``auto`` (``--data.source auto``, the default): a record holds ``paraphrases`` or ``question`` or both (the
    question, then its paraphrases; a first paraphrase equal to the question is not asked twice), and one without
    ``id`` is named by its line number (its position in a ``.json`` / ``.parquet`` file), so a plain
    ``{question, answers}`` file is read as it is. ``groups``: every record has ``id`` and ``paraphrases`` (today's
    schema, read exactly as before)."""
    unit, rows = read_records(path, allow_hub=False)
    groups, seen = [], {}
    for number, rec in rows:
        check_record(path, unit, number, rec)
        if auto:
            key, paraphrases = _auto_id_and_paraphrases(path, unit, number, rec)
        else:
            if "id" not in rec or rec["id"] in (None, ""):
                raise UserError(f"{path}: {unit} {number}: field 'id' is missing")
            key, paraphrases = str(rec["id"]), check_str_list(path, unit, number, rec, "paraphrases")
        for p in paraphrases:
            if not p.strip():
                raise UserError(f"{path}: {unit} {number} (record {key!r}): an empty paraphrase")
        answers = check_str_list(path, unit, number, rec, "answers", allow_empty=True) if "answers" in rec else []
        conf = rec.get("confidences")
        if conf is not None and (len(conf) != len(paraphrases) or not all(0 <= float(c) <= 1 for c in conf)):
            raise UserError(f"{path}: {unit} {number} (record {key!r}): 'confidences' must hold one value "
                             f"in [0, 1] per paraphrase ({len(paraphrases)})")
        if key in seen:
            raise UserError(f"{path}: {unit} {number}: id {key!r} repeats {unit} {seen[key]}")
        seen[key] = number
        group = {"id": key, "paraphrases": list(paraphrases), "answers": list(answers),
                 "confidences": None if conf is None else [float(c) for c in conf]}
        check_str(path, unit, number, rec, "paraphraser", optional=True)
        if rec.get("paraphraser"):  # written by `paraphrase`: the heads' origin_share "auto" weighs the original
            group["paraphraser"] = rec["paraphraser"]
        groups.append(group)
    if not groups:
        raise UserError(f"{path}: no records")
    return groups


def _auto_id_and_paraphrases(path: str, unit: str, number: int, rec: dict) -> tuple[str, list[str]]:
    """A record's id (its own, else its line number) and paraphrases under ``--data.source auto``."""
    key = str(number) if rec.get("id") in (None, "") else str(rec["id"])
    if "question" not in rec and "paraphrases" not in rec:
        raise UserError(f"{path}: {unit} {number}: a record needs 'question' (one question) or 'paraphrases' (a "
                         f"list of them), or both; it has {sorted(rec) or 'no field'}")
    paraphrases = check_str_list(path, unit, number, rec, "paraphrases") if "paraphrases" in rec else []
    if "question" in rec:
        check_str(path, unit, number, rec, "question")
        question = rec["question"]
        if paraphrases and paraphrases[0].strip() == question.strip():  # `paraphrase` writes the question first
            paraphrases = paraphrases[1:]
        paraphrases = [question, *paraphrases]
    return key, paraphrases


def load_confidences(path: str) -> dict[str, list[float]]:
    """``{id: [confidence per paraphrase]}`` from a JSONL file of ``{"id", "confidences"}``."""
    unit, rows = read_records(path, allow_hub=False)
    table = {}
    for number, rec in rows:
        check_record(path, unit, number, rec)
        check_str(path, unit, number, {"id": str(rec.get("id", ""))}, "id")
        conf = rec.get("confidences")
        if not isinstance(conf, list) or not all(isinstance(c, (int, float)) and 0 <= c <= 1 for c in conf):
            raise UserError(f"{path}: {unit} {number}: field 'confidences' must be a list of numbers in [0, 1]")
        table[str(rec["id"])] = [float(c) for c in conf]
    return table


class GroupDataset(Dataset):
    def __init__(self, groups: list[dict]):
        self.groups = groups

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict:
        return self.groups[index]


class ShardSampler(DistributedSampler):
    """Process ``rank`` of ``num_replicas`` gets indices ``rank, rank + num_replicas, ...``: every index exactly once
    across processes, without the padding (repeats) of ``DistributedSampler``; a share may be empty."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self):
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


class ParaphraseDataModule(LightningDataModule):
    """Paraphrase groups for predict (and fit/validate, for fine-tuning runs)."""

    def __init__(
        self,
        path: str | list[str] = DEMO,
        source: Source = "auto",
        task: Literal["webqa", "myriadlama"] = "webqa",
        split: str = "test",
        limit: int | None = None,
        start: int = 0,
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
        few_shot_pool: str | list[str] | None = None,
        demo_blocks: int = 1,
        demo_selection: DemoSelection = "random",
        batch_size: int = 8,
        num_workers: int = 0,
        val_path: str | None = None,
        val_split: str = "validation",
        val_limit: int | None = None,
        val_size: int = 0,
        chat_template: ChatTemplate = "none",
    ):
        """
        Args:
            path: A file of questions (JSONL / JSON / parquet of ``{id?, question?, paraphrases?, answers,
                confidences?}``), ``demo`` for the shipped demo set, or a hub id or local file in a dataset's schema
                (``source``). A list of such sources answers them all, in order (ids must not repeat across them).
            source: Schema of ``path``. ``auto`` (default): ``demo``; a local file grouped by fact
                (``manual_paraphrases``) is ``myriadlama``; any other local file holds ``question`` (one
                paraphrase), ``paraphrases``, or both (the question first), ids its records' ``id`` or else their
                line numbers; the hub ids ``stanfordnlp/web_questions`` (``webqa``) and ``iszhaoxin/MyriadLAMA``
                (``myriadlama``). ``groups``: ``{id, paraphrases}`` records only. ``webqa`` (``question, answers,
                url``: one paraphrase per group, ids ``webqa-<split>-<index>``); ``myriadlama`` (hub rows ``uuid,
                sub_ent, template, ...``, or a local file already grouped with ``manual_paraphrases`` /
                ``auto_paraphrases``). ``choice``: multiple choice, ``{id?, question?, paraphrases?, options, gold}``
                (:mod:`selfens_pl.data.sources.choice`; ``auto`` reads a ``.jsonl`` whose first record has
                ``options`` so), answered by :class:`~selfens_pl.heads.choice.ChoiceHead`.
            task: Picks the default instruction and few-shot block: ``webqa`` or ``myriadlama``.
            split: Dataset split for hub sources (MyriadLAMA: the split the test facts are drawn from).
            limit: Answer only the first ``limit`` groups (from ``start``).
            start: Skip the first ``start`` groups of ``path`` (a slice of a split: ``start 1300 limit 200`` answers
                groups 1300-1499).
            num_paraphrases: Keep the first ``num_paraphrases`` paraphrases of every group (a group with fewer is
                an error).
            num_manual: MyriadLAMA: manual templates per fact (chosen reproducibly by fact id).
            num_auto: MyriadLAMA: automatic templates per fact.
            test_size: MyriadLAMA hub rows: facts in the deterministic test split (seed ``few_shot_seed``).
            confidences: JSONL of ``{id, confidences}`` (from ``python -m selfens_pl confidence``) for weighted methods.
            instruction: Instruction text; default: the task's standard instruction.
            few_shot: Explicit few-shot examples ``[{question, answer}]``; ``[]`` for zero-shot. Default: the task's
                standard five-shot block (WebQuestions: five train questions, the demo's; MyriadLAMA: the standard one).
            few_shot_source: WebQA-schema source (hub id or file) to sample ``num_few_shot`` examples from.
            num_few_shot: How many few-shot examples to sample from ``few_shot_source``.
            few_shot_seed: Seed for sampling few-shot examples and splits.
            few_shot_pool: Demonstrations for the extra few-shot blocks of ``demo_blocks`` (one source or a list):
                MyriadLAMA grouped facts or hub rows (a fact's manual paraphrase and first answer), or WebQuestions
                questions (file or hub id, split ``train``), or ``webquestions-train``: the WebQuestions train split
                shipped in the package (offline). The pool may hold the answered facts: a group's blocks never show
                its own fact.
            demo_blocks: ``M``: ask every paraphrase with ``M`` five-shot blocks (block 0 the configured one,
                blocks 1..M-1 taken from ``few_shot_pool`` as ``demo_selection`` says), so a group has ``K x M``
                members (:mod:`selfens_pl.data.demos`). ``1``: the configured block only.
            demo_selection: How blocks 1..M-1 of ``demo_blocks`` are filled: ``random`` (drawn by group id and
                block index) or ``similar`` (BM25 over the pool's questions: block j holds the 5(j-1)+1-th to
                5j-th most similar demonstrations to the group's first paraphrase). Block 0 and ``M = 1`` runs are
                the same either way.
            batch_size: Groups per batch (every paraphrase of a group rides in the same batch).
            num_workers: DataLoader workers.
            val_path: Fine-tuning only: validation groups (same ``source`` schema and options as ``path``).
            val_split: Split of ``val_path`` for hub sources.
            val_limit: Validate on the first ``val_limit`` groups of ``val_path``.
            val_size: Fine-tuning without ``val_path``: hold the last ``val_size`` groups of ``path`` out of training
                and validate on them.
            chat_template: How every prompt is rendered (every member, every few-shot block, content-free and
                rescoring prompts alike): ``none`` (default), the reference code's ``Q:``/``A:`` text; ``model``, the
                tokenizer's chat template: the instruction as the system message, each few-shot example as a
                user/assistant turn pair, the question as the last user turn (:mod:`selfens_pl.data.prompts`; a model
                without a chat template is refused). Measured against each other in ``studies/chat_template/``.
        """
        super().__init__()
        self.save_hyperparameters()
        self.groups: list[dict] | None = None
        self.val_groups: list[dict] | None = None
        self.template: PromptTemplate | None = None
        #: Ids not to answer (set by ``predict`` when it resumes into an output directory that already holds them).
        self.skip_ids: set[str] = set()
        # With fewer groups left than processes a process gets none; the predict writer copes with that.
        self.allow_zero_length_dataloader_with_multiple_devices = True

    # -- loading -------------------------------------------------------------------------------------------------
    def _load(self, path: str | list[str], split: str) -> list[dict]:
        if not isinstance(path, str):  # several sources, answered in order
            if not path:
                raise UserError("--data.path: an empty list of sources")
            groups, seen = [], {}
            for source in path:
                for group in self._load(source, split):
                    if group["id"] in seen:
                        raise UserError(f"--data.path: record {group['id']!r} of {source} repeats one of "
                                         f"{seen[group['id']]}")
                    seen[group["id"]] = source
                    groups.append(group)
            return groups
        hp = self.hparams
        path = shipped_path(path)
        source = auto_source(path) if hp.source == "auto" else hp.source
        if source in ("groups", DEMO, "file"):
            return load_groups(demo_path() if path == DEMO else path, auto=source != "groups")
        if source == "choice":
            return load_choice_groups(path)
        if source == "webqa":
            return webqa_groups(load_webqa(path, split), id_prefix=f"webqa-{split}")
        if source == "myriadlama":
            if is_grouped_myriadlama(path):
                facts = load_myriadlama_groups(path)
            else:  # hub rows (a hub id or a local file of rows): group by fact, keep the deterministic test split
                _, facts = split_facts(group_myriadlama(load_myriadlama_rows(path, split)), hp.test_size,
                                       hp.few_shot_seed)
            return myriadlama_groups(facts, hp.num_manual, hp.num_auto)
        raise UserError(f"--data.source={hp.source!r}: choose auto, groups, webqa, myriadlama or choice")

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
        else:  # WebQuestions' standard block (five train questions: the demo's, and every webqa preset's)
            few_shot = demo_few_shot()
        return PromptTemplate(instruction=instruction, few_shot=few_shot, chat_template=hp.chat_template)

    def _check_slice(self) -> None:
        """The numeric flags, before any file is read: one error naming the flag (torch's sampler would say
        ``batch_size should be a positive integer value`` in a traceback; ``num_paraphrases 0`` would reach the
        heads as empty groups)."""
        hp = self.hparams
        check_chat_template(hp.chat_template)
        if hp.limit is not None and hp.limit < 1:
            raise UserError(f"--data.limit must be >= 1, got {hp.limit}")
        if isinstance(hp.start, bool) or not isinstance(hp.start, int) or hp.start < 0:
            raise UserError(f"--data.start must be a whole number >= 0, got {hp.start!r}")
        for flag, value, least in (("num_paraphrases", hp.num_paraphrases, 1), ("batch_size", hp.batch_size, 1),
                                   ("num_workers", hp.num_workers, 0)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise UserError(f"--data.{flag} must be a whole number >= {least}, got {value!r}")

    def _slice(self, groups: list[dict]) -> list[dict]:
        hp = self.hparams
        if hp.start >= len(groups):
            raise UserError(f"--data.start={hp.start} skips every group: {hp.path} holds {len(groups)}")
        return groups[hp.start:][: hp.limit]

    def read(self) -> list[dict]:
        """The groups of ``path`` from ``start``, at most ``limit``, as read: no prompt template, no cut to
        ``num_paraphrases``, no confidences or blocks. For a tool that only takes the questions (``paraphrase``)."""
        self._check_slice()
        return self._slice(self._load(self.hparams.path, self.hparams.split))

    def setup(self, stage: str | None = None) -> None:
        if self.groups is not None:
            return
        hp = self.hparams
        self._check_slice()
        check_demo_selection(hp.demo_selection)
        groups = self._load(hp.path, hp.split)
        if hp.val_path is not None:
            self.val_groups = self._load(hp.val_path, hp.val_split)[: hp.val_limit]
        elif hp.val_size:  # hold the last val_size groups out of training, before limit applies
            if hp.val_size >= len(groups):
                raise UserError(f"--data.val_size={hp.val_size} leaves no training groups out of {len(groups)}")
            groups, self.val_groups = groups[: -hp.val_size], groups[-hp.val_size:]
        if self.val_groups is not None:
            self.val_groups = self._prepare(self.val_groups)
        groups = self._prepare(self._slice(groups))
        self.template = self._template(groups + (self.val_groups or []))
        if hp.demo_blocks != 1:
            self._attach_blocks(groups + (self.val_groups or []))
        self.groups = groups

    def _attach_blocks(self, groups: list[dict]) -> None:
        """``--data.demo_blocks M``: give every group its ``M - 1`` extra few-shot blocks
        (:mod:`selfens_pl.data.demos`)."""
        hp = self.hparams
        if hp.demo_blocks < 1:
            raise UserError(f"--data.demo_blocks must be >= 1, got {hp.demo_blocks}")
        if hp.few_shot_pool is None:
            raise UserError(f"--data.demo_blocks={hp.demo_blocks} needs --data.few_shot_pool (demonstrations to draw "
                             "the extra blocks from: webquestions-train, shipped, or a file in the task's schema)")
        shots = len(self.template.few_shot) or hp.num_few_shot
        attach_blocks(groups, load_pool(hp.few_shot_pool, hp.task), hp.demo_blocks, shots, hp.demo_selection)

    def _prepare(self, groups: list[dict]) -> list[dict]:
        """Cut every group to ``num_paraphrases``, then attach confidences by id and paraphrase index.

        A confidence file may hold one value per paraphrase of the full group or of the cut group.
        """
        hp = self.hparams
        n = hp.num_paraphrases
        full = {g["id"]: len(g["paraphrases"]) for g in groups}
        if n is not None:
            for g in groups:
                if len(g["paraphrases"]) < n:
                    raise UserError(f"record {g['id']!r} has {len(g['paraphrases'])} paraphrases, fewer than "
                                     f"--data.num_paraphrases={n}")
                g["paraphrases"] = g["paraphrases"][:n]
                if g.get("confidences") is not None:
                    g["confidences"] = g["confidences"][:n]
        if hp.confidences:
            table = load_confidences(hp.confidences)
            for g in groups:
                if g["id"] not in table:
                    raise UserError(f"record {g['id']!r} has no entry in --data.confidences={hp.confidences}")
                conf = table[g["id"]]
                if len(conf) not in (len(g["paraphrases"]), full[g["id"]]):
                    raise UserError(f"record {g['id']!r}: {len(conf)} confidences in {hp.confidences} for "
                                     f"{len(g['paraphrases'])} paraphrases")
                g["confidences"] = conf[: len(g["paraphrases"])]
        return groups

    # -- loaders -------------------------------------------------------------------------------------------------
    def collate(self, groups: list[dict]) -> dict:
        return {"groups": groups, "template": self.template}

    def _loader(self) -> DataLoader:
        if self.groups is None:
            self.setup()
        groups = [g for g in self.groups if g["id"] not in self.skip_ids] if self.skip_ids else self.groups
        dataset = GroupDataset(groups)
        trainer = self.trainer
        sampler = None
        if trainer is not None and trainer.world_size > 1:
            # Our own sampler (a DistributedSampler, so Lightning keeps it, even with use_distributed_sampler=False):
            # replica r answers groups r, r + W, ...; nothing padded or repeated, a share may be empty. A replica is a
            # process, or under tensor parallelism a tensor-parallel group (its processes answer the same groups).
            replicas, rank = data_parallel_shard(trainer)
            sampler = ShardSampler(dataset, num_replicas=replicas, rank=rank)
        return DataLoader(dataset, batch_size=self.hparams.batch_size, shuffle=False, sampler=sampler,
                          num_workers=self.hparams.num_workers, collate_fn=self.collate)

    def predict_dataloader(self) -> DataLoader:
        return self._loader()

    def train_dataloader(self) -> DataLoader:
        """Fine-tuning: the groups of ``path``, shuffled (Lightning adds a DistributedSampler under DDP)."""
        if self.groups is None:
            self.setup()
        generator = torch.Generator().manual_seed(self.hparams.few_shot_seed)
        return DataLoader(GroupDataset(self.groups), batch_size=self.hparams.batch_size, shuffle=True,
                          generator=generator, num_workers=self.hparams.num_workers, collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader:
        """Fine-tuning: the groups of ``val_path``, answered and scored exactly as in predict."""
        if self.groups is None:
            self.setup()
        if not self.val_groups:
            raise UserError("validation needs --data.val_path (or --trainer.limit_val_batches=0 to skip it)")
        return DataLoader(GroupDataset(self.val_groups), batch_size=self.hparams.batch_size, shuffle=False,
                          num_workers=self.hparams.num_workers, collate_fn=self.collate)


